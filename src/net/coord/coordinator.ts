/**
 * The coordinator: the epoch authority of docs/failover.md. It registers server incarnations,
 * keeps their leases, answers which server holds a location (moving it when its holder's lease is
 * over), grants locations with epochs, fixes cuts, confirms epochs, and moves or drains on an
 * operator's request. This file is its NATS face: subscriptions, reply-subject checks, parsing
 * (wire/coordinator-parsers.ts) and error replies; the decisions are in coordinator-handlers.ts
 * (servers' requests) and coordinator-client-handlers.ts (clients' and operators'), the durable
 * state in coordinator-state.ts, the leases in leases.ts.
 *
 * Abuse bounds. An assignment is durable and never removed, so `locate` of new locations is what a
 * hostile client could use to grow the state without end. New assignments are rate limited per
 * client (token bucket `assignBurstPerClientMax` / `assignPerClientPerSecMax`, the client being
 * the first token of its reply inbox) and for all clients together (`assignBurstMax` /
 * `assignPerSecMax`), both answered UNAVAILABLE (the client retries with backoff), and bounded in
 * total (`assignmentsMax`, TOO_LARGE). Locating a known location is never limited. Replies go only
 * to subjects below `inboxPrefix` (default "_INBOX"); a request naming another reply subject (e.g.
 * someone's change feed) is dropped unanswered. Lists in one request are bounded by
 * `locationsPerRequestMax`. Who may send register/claim/move/drain is a matter of nats-server
 * permissions on `P.coord.*` (deploy/): servers and operators, not clients.
 *
 * Grants made while locating new locations are published on `P.s.<id>.grant` (a publish, no
 * reply) by the state once their batch is durable and before any reply of that batch is sent, so
 * on one nats-server the push is ahead of the client's first request in the server's inbound
 * stream (docs/failover.md, "Creation").
 *
 * Nothing a client sends can crash the process: each handler ends in a reply, and only `assert`
 * failures (bugs) escape.
 */
import type { Msg, NatsConnection, Subscription } from "nats";
import { StrataError } from "../../errors.js";
import { refuseWarningCallbacks, silentLogger, type LogFields, type Logger } from "../../logger.js";
import { DEFAULT_COORDINATOR_LIMITS, resolveCoordinatorLimits, type CoordinatorLimits } from "../../limits.js";
import {
  parseClaimRequest,
  parseConfirmRequest,
  parseCutRequest,
  parseDrainRequest,
  parseHandoverReply,
  parseLocateRequest,
  parseMoveRequest,
  parseRegisterRequest,
  parseReleaseRequest,
  parseRenewRequest,
} from "../wire/coordinator-parsers.js";
import {
  DEFAULT_PREFIX,
  SERVER_HEADER,
  coordSubjects,
  decodeBody,
  encodeBody,
  grantSubject,
  handoverSubject,
  respondBody,
  respondError,
  validatePrefix,
  type HandoverReply,
  type ServersReply,
} from "../wire/coordinator-protocol.js";
import { DEFAULT_INBOX_PREFIX, replyClient, validateInboxPrefix } from "../wire/subjects.js";
import { claimPresence, type Presence } from "../wire/presence.js";
import { errorOfReply, fromNatsError } from "../wire/wire-errors.js";
import { ClientHandlers } from "./coordinator-client-handlers.js";
import { HolderError, ServerHandlers } from "./coordinator-handlers.js";
import { CoordinatorState } from "./coordinator-state.js";
import { LeaseTable } from "./leases.js";
import { TokenBuckets } from "./rate-limit.js";
import type { Metrics } from "../../metrics/metrics.js";
import { CoordinatorMetrics, type COORDINATOR_OPS } from "../../metrics/coordinator-metrics.js";

/** Defaults of the coordinator (src/limits.ts); each can be overridden in `startCoordinator`'s options. */
export const COORDINATOR_DEFAULTS = DEFAULT_COORDINATOR_LIMITS;

export interface CoordinatorOptions {
  nc: NatsConnection;
  /** Directory of the coordinator's LMDB state; one coordinator per directory. */
  dataDir: string;
  prefix?: string;
  /** The lease (ms); renew interval and margin follow as lease/5 unless set in `limits`. */
  leaseMs?: number;
  /** The other limits (leases, assignment rates and totals, see src/limits.ts `CoordinatorLimits`). */
  limits?: Partial<CoordinatorLimits>;
  /** Replies go only below this prefix (default "_INBOX"); other requests are dropped unanswered. */
  inboxPrefix?: string;
  /**
   * Where the coordinator logs (pino-compatible, src/logger.ts): notable events at info (a server
   * joined or released its lease, a location moved) and problems at warn (refused requests, failed
   * handovers), each with an `event` name and fields. None: it logs nothing.
   */
  logger?: Logger;
  /** Monotonic clock in ms (default performance.now); tests may inject a skewed one. */
  clock?: () => number;
  /** Records the coordinator's metrics into this registry (src/metrics/coordinator-metrics.ts). None: nothing recorded. */
  metrics?: Metrics;
}

export interface CoordinatorStats {
  /** Assignments on disk and being recorded. */
  assignments: number;
  /** Requests dropped unanswered because their reply subject lies outside the inbox prefix. */
  repliesRefused: number;
  /** New locations granted by locate and pushed to their server (`P.s.<id>.grant`). */
  grantsPushed: number;
}

export interface Coordinator {
  /** The limits in force (leases included). */
  readonly limits: CoordinatorLimits;
  stats(): CoordinatorStats;
  /** Whether its state is open and it answers (false once stop() began): /readyz. */
  isOpen(): boolean;
  /** Stops answering, waits for in-flight requests, closes the state. Does not close `nc`. */
  stop(): Promise<void>;
}

export async function startCoordinator(options: CoordinatorOptions): Promise<Coordinator> {
  refuseWarningCallbacks(options, "startCoordinator");
  const prefix = validatePrefix(options.prefix ?? DEFAULT_PREFIX);
  const inboxPrefix = validateInboxPrefix(options.inboxPrefix ?? DEFAULT_INBOX_PREFIX);
  const limits = resolveCoordinatorLimits({ ...options.limits, ...(options.leaseMs !== undefined ? { leaseMs: options.leaseMs } : {}) });
  const clock = options.clock ?? (() => performance.now());
  let grantsPushed = 0;
  const pushGrants = (server: string, incarnation: number, grants: Array<[string, number]>): void => {
    // The key of the incarnation the grants were made to; a server that registered again since
    // would ignore them anyway (and claims what it is asked for).
    const record = state.server(server);
    if (record?.pushKey === undefined || record.incarnation !== incarnation) return;
    const subject = grantSubject(prefix, server);
    // Half of nats-server's max_payload for the names leaves ample room for the rest of the body.
    const charsMax = Math.floor((options.nc.info?.max_payload ?? 1024 * 1024) / 2);
    for (const part of pushParts(grants, limits.locationsPerRequestMax, charsMax)) {
      try {
        options.nc.publish(subject, encodeBody({ incarnation, key: record.pushKey, grants: part }));
        grantsPushed += part.length;
      } catch {
        // The connection is closing: the server claims these locations when it is asked for them.
      }
    }
  };
  const state = CoordinatorState.open(options.dataDir, { serversMax: limits.serversMax, pendingChangesMax: limits.pendingAssignmentsMax, now: Date.now, onGrants: pushGrants });
  // Restart rule: every known server counts as having renewed now (docs/failover.md).
  const leases = new LeaseTable(limits, clock(), state.knownIncarnations());
  const perClient = new TokenBuckets(limits.assignBurstPerClientMax, limits.assignPerClientPerSecMax, limits.assignClientsMax, clock);
  const overall = new TokenBuckets(limits.assignBurstMax, limits.assignPerSecMax, 1, clock);
  let repliesRefused = 0;
  const logger = options.logger ?? silentLogger;
  const warn = throttled(logger);
  const event = (fields: LogFields, message: string): void => logger.info(fields, message);
  const subjects = coordSubjects(prefix);
  const inFlight = new Set<Promise<void>>();
  const stopped = new AbortController();

  const askHandover = async (id: string, epochs: Array<[string, number]>): Promise<HandoverReply> => {
    const subject = handoverSubject(prefix, id);
    let msg: Msg;
    try {
      msg = await options.nc.request(subject, encodeBody({ epochs }), { timeout: limits.handoverTimeoutMs });
    } catch (err) {
      throw fromNatsError(err, `asking server ${id} to hand over (${subject})`);
    }
    const error = errorOfReply(msg, () => `handover of server ${id}`);
    if (error) throw error;
    return parseHandoverReply(decodeBody(msg.data, "handover reply"), limits.locationsPerRequestMax);
  };

  const sleep = (ms: number): Promise<void> =>
    new Promise((resolve) => {
      if (stopped.signal.aborted) return resolve();
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        stopped.signal.removeEventListener("abort", done);
        resolve();
      }
      stopped.signal.addEventListener("abort", done);
    });

  const deps = { state, leases, limits, clock, askHandover, sleep, warn, event };
  const fromServers = new ServerHandlers(deps);
  const fromClients = new ClientHandlers(deps);
  const metrics =
    options.metrics === undefined
      ? undefined
      : new CoordinatorMetrics(options.metrics, {
          servers: () => state.serverRecords().length,
          serversAlive: () => fromClients.view().filter((s) => s.live).length,
          assignments: () => state.assignmentCount(),
          grantsPushed: () => grantsPushed,
          repliesRefused: () => repliesRefused,
        });

  const track = (work: Promise<void>): void => {
    inFlight.add(work);
    void work.finally(() => inFlight.delete(work));
  };

  /** The client of a request whose reply subject may be answered; undefined drops the request. */
  const answerable = (msg: Msg): string | undefined => {
    if (!msg.reply) return undefined;
    const client = replyClient(msg.reply, inboxPrefix);
    if (client === undefined) {
      repliesRefused += 1;
      warn({ event: "reply_subject_refused", subject: msg.subject, inboxPrefix, refused: repliesRefused }, `dropped a request on ${msg.subject} whose reply subject is outside the inbox prefix "${inboxPrefix}" (${repliesRefused} so far)`);
    }
    return client;
  };

  /** Spends the tokens of one new assignment, or refuses it. */
  const admit = (client: string) => (): void => {
    if (!perClient.take(client)) {
      throw new StrataError("UNAVAILABLE", `this client placed new locations faster than ${limits.assignPerClientPerSecMax}/s (assignPerClientPerSecMax); retry shortly`);
    }
    if (!overall.take("all")) {
      perClient.refund(client);
      throw new StrataError("UNAVAILABLE", `new locations are being placed faster than ${limits.assignPerSecMax}/s (assignPerSecMax); retry shortly`);
    }
  };

  /**
   * Parses, answers, and turns any failure into an error reply (with `Strata-Server` when known).
   * `early` lets a handler send its reply from inside the state's batch, in the same socket write
   * as the batch's grant pushes (coordinator-state.ts `change`); it then sends nothing more.
   */
  const handle = (what: string, answer: (body: unknown, client: string, receivedAt: number, early: (value: unknown) => void) => unknown) => {
    const m = metrics?.op(what.slice(0, what.indexOf(" ")) as (typeof COORDINATOR_OPS)[number]);
    return async (msg: Msg): Promise<void> => {
      const receivedAt = clock();
      const client = answerable(msg);
      if (client === undefined) return;
      m?.requests.inc();
      let answered = false;
      const early = (value: unknown): void => {
        answered = true;
        respondBody(msg, value);
      };
      try {
        const value = await answer(decodeBody(msg.data, what), client, receivedAt, early);
        if (!answered) respondBody(msg, value);
      } catch (err) {
        metrics?.errors.count(err);
        if (!answered) respondError(msg, err, err instanceof HolderError ? { [SERVER_HEADER]: err.server } : {});
      }
      m?.seconds.observe((clock() - receivedAt) / 1000);
    };
  };

  const onServers = (msg: Msg): void => {
    if (answerable(msg) === undefined) return;
    metrics?.op("servers").requests.inc();
    try {
      // The body is optional; if one is sent it must at least be CBOR, so garbage is reported.
      if (msg.data.byteLength > 0) decodeBody(msg.data, "servers request");
      const reply: ServersReply = { servers: fromClients.view() };
      respondBody(msg, reply);
    } catch (err) {
      metrics?.errors.count(err);
      respondError(msg, err);
    }
  };

  const max = limits.locationsPerRequestMax;
  const handlers: Array<[string, (msg: Msg) => void | Promise<void>]> = [
    [subjects.register, handle("register request", (b) => fromServers.register(parseRegisterRequest(b)))],
    [subjects.renew, handle("renew request", (b, _c, at) => fromServers.renew(parseRenewRequest(b), at))],
    [subjects.locate, handle("locate request", (b, client, _at, early) => fromClients.locate(parseLocateRequest(b), admit(client), early))],
    [subjects.claim, handle("claim request", (b, _c, _at, early) => fromServers.claim(parseClaimRequest(b, max), early))],
    [subjects.cut, handle("cut request", (b) => fromServers.cut(parseCutRequest(b)))],
    [subjects.confirm, handle("confirm request", (b) => fromServers.confirm(parseConfirmRequest(b, max)))],
    [subjects.release, handle("release request", (b) => fromServers.release(parseReleaseRequest(b, max)))],
    [subjects.move, handle("move request", (b) => { const r = parseMoveRequest(b); return fromClients.move(r.location, r.to); })],
    [subjects.drain, handle("drain request", (b) => fromClients.drain(parseDrainRequest(b).server))],
    [subjects.servers, onServers],
  ];

  const subscribe = (subject: string, handler: (msg: Msg) => void | Promise<void>): Subscription =>
    options.nc.subscribe(subject, {
      callback: (err, msg) => {
        if (err) {
          warn({ event: "subscription_error", subject, error: err.message }, `subscription to ${subject} failed: ${err.message}`);
          return;
        }
        const result = handler(msg);
        if (result instanceof Promise) track(result);
      },
    });

  let subs: Subscription[];
  let presence: Presence;
  try {
    // One coordinator per prefix: a second would assign locations on its own (two owners).
    presence = await claimPresence(options.nc, subjects.presence, { role: "coordinator", dir: options.dataDir }, limits.presenceProbeMs, logger);
  } catch (err) {
    await state.close();
    throw err;
  }
  try {
    subs = handlers.map(([subject, handler]) => subscribe(subject, handler));
    // Once flushed, the nats-server has the subscriptions: a request sent after `startCoordinator`
    // resolves is answered rather than refused with "no responders".
    await options.nc.flush();
  } catch (err) {
    await state.close();
    throw err;
  }

  let stopping: Promise<void> | undefined;
  return {
    limits,
    stats: () => ({ assignments: state.assignmentCount(), repliesRefused, grantsPushed }),
    isOpen: () => stopping === undefined,
    stop() {
      stopping ??= (async () => {
        stopped.abort();
        presence.close();
        await Promise.allSettled(subs.map((s) => (s.isClosed() ? Promise.resolve() : s.drain())));
        await Promise.allSettled([...inFlight]);
        await state.close();
      })();
      return stopping;
    },
  };
}

/** Grants to push, in messages of at most `max` locations and `charsMax` characters of them. */
function* pushParts(grants: Array<[string, number]>, max: number, charsMax: number): Generator<Array<[string, number]>> {
  let part: Array<[string, number]> = [];
  let chars = 0;
  for (const g of grants) {
    if (part.length > 0 && (part.length >= max || chars + g[0].length + 16 > charsMax)) {
      yield part;
      part = [];
      chars = 0;
    }
    part.push(g);
    chars += g[0].length + 16;
  }
  if (part.length > 0) yield part;
}

/**
 * Passes on the 1st, 2nd, 4th, 8th… warning: a flood of bad requests (a misconfigured server)
 * must not flood the log, but the count still shows how bad it is.
 */
function throttled(logger: Logger): (fields: LogFields, message: string) => void {
  let count = 0;
  return (fields, message) => {
    count += 1;
    if ((count & (count - 1)) === 0) logger.warn(count === 1 ? fields : { ...fields, warnings: count }, count === 1 ? message : `${message} (${count} warnings so far)`);
  };
}

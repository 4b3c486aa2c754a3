/**
 * The coordinator (first version): knows which persistence servers are live and answers which
 * server holds a location.
 *
 * - Servers register simply by heartbeating on `P.coord.heartbeat` (see server/heartbeat.ts); a server
 *   is live while its heartbeats arrive within `serverTtlMs`.
 * - `P.coord.locate` `{ location }` → `{ server }`. A location keeps the server it was first
 *   given (sticky). A new location goes to a live server chosen by weighted rendezvous hashing
 *   (coordinator-placement.ts). If the location's server is down, the answer is UNAVAILABLE
 *   (retryable) naming the server in `Strata-Server`: this version never moves a location,
 *   because moving safely needs leases with epochs (DESIGN.md), which come later.
 * - `P.coord.servers` → `{ servers: ServerView[] }` for operators.
 *
 * Abuse bounds. An assignment is durable and never removed, so `locate` of new locations is what a
 * hostile client could use to grow the state without end. New assignments are rate limited per
 * client (token bucket `assignBurstPerClientMax` / `assignPerClientPerSecMax`, the client being
 * the first token of its reply inbox) and for all clients together (`assignBurstMax` /
 * `assignPerSecMax`), both answered UNAVAILABLE (the client retries with backoff), and bounded in
 * total (`assignmentsMax`, TOO_LARGE). Locating a known location is never limited. We keep
 * assigning at first locate (not at first write) because that is what keeps placement sticky and
 * correct without a claim round trip from servers in every first write: an answer once given is
 * never contradicted. Replies go only to subjects below `inboxPrefix` (default "_INBOX"); a
 * request naming another reply subject (e.g. someone's change feed) is dropped unanswered.
 *
 * Every wire input is parsed in wire/coordinator-protocol.ts; a malformed request gets an error reply
 * and never reaches the state. Nothing a client sends can crash the process: each handler ends
 * in an error reply, and only `assert` failures (bugs) escape.
 */
import type { Msg, NatsConnection, Subscription } from "nats";
import { StrataError } from "../../errors.js";
import { DEFAULT_COORDINATOR_LIMITS, resolveCoordinatorLimits, type CoordinatorLimits } from "../../limits.js";
import { pickServer } from "./coordinator-placement.js";
import {
  DEFAULT_PREFIX,
  SERVER_HEADER,
  coordSubjects,
  decodeBody,
  parseHeartbeat,
  parseLocateRequest,
  respondBody,
  respondError,
  validatePrefix,
  type LocateReply,
  type ServersReply,
} from "../wire/coordinator-protocol.js";
import { CoordinatorState } from "./coordinator-state.js";
import { TokenBuckets } from "./rate-limit.js";
import { DEFAULT_INBOX_PREFIX, replyClient, validateInboxPrefix } from "../wire/subjects.js";

/** Defaults of the coordinator (src/limits.ts); each can be overridden in `startCoordinator`'s options. */
export const COORDINATOR_DEFAULTS = DEFAULT_COORDINATOR_LIMITS;

export interface CoordinatorOptions {
  nc: NatsConnection;
  /** Directory of the coordinator's LMDB state; one coordinator per directory. */
  dataDir: string;
  prefix?: string;
  serverTtlMs?: number;
  serversMax?: number;
  pendingAssignmentsMax?: number;
  /** The other limits (assignment rates and total, see src/limits.ts `CoordinatorLimits`). */
  limits?: Partial<CoordinatorLimits>;
  /** Replies go only below this prefix (default "_INBOX"); other requests are dropped unanswered. */
  inboxPrefix?: string;
  /** Problems worth an operator's attention (malformed heartbeats, refused servers). */
  onWarning?: (message: string) => void;
  /** Notable events: a server joined or restarted. */
  onEvent?: (message: string) => void;
}

export interface CoordinatorStats {
  /** Assignments on disk and being recorded. */
  assignments: number;
  /** Requests dropped unanswered because their reply subject lies outside the inbox prefix. */
  repliesRefused: number;
}

export interface Coordinator {
  stats(): CoordinatorStats;
  /** Stops answering, waits for in-flight requests, closes the state. Does not close `nc`. */
  stop(): Promise<void>;
}

export async function startCoordinator(options: CoordinatorOptions): Promise<Coordinator> {
  const prefix = validatePrefix(options.prefix ?? DEFAULT_PREFIX);
  const inboxPrefix = validateInboxPrefix(options.inboxPrefix ?? DEFAULT_INBOX_PREFIX);
  const limits = resolveCoordinatorLimits({
    ...options.limits,
    ...(options.serverTtlMs !== undefined ? { serverTtlMs: positiveInt(options.serverTtlMs, "serverTtlMs") } : {}),
    ...(options.serversMax !== undefined ? { serversMax: positiveInt(options.serversMax, "serversMax") } : {}),
    ...(options.pendingAssignmentsMax !== undefined ? { pendingAssignmentsMax: positiveInt(options.pendingAssignmentsMax, "pendingAssignmentsMax") } : {}),
  });
  const serverTtlMs = limits.serverTtlMs;
  const monotonicNow = () => performance.now();
  const state = CoordinatorState.open(options.dataDir, {
    serverTtlMs,
    serversMax: limits.serversMax,
    pendingAssignmentsMax: limits.pendingAssignmentsMax,
    now: Date.now,
    monotonicNow,
  });
  const perClient = new TokenBuckets(limits.assignBurstPerClientMax, limits.assignPerClientPerSecMax, limits.assignClientsMax, monotonicNow);
  const overall = new TokenBuckets(limits.assignBurstMax, limits.assignPerSecMax, 1, monotonicNow);
  let repliesRefused = 0;
  const warn = throttled(options.onWarning ?? ((m) => process.emitWarning(m, "StrataWarning")));
  const event = options.onEvent ?? (() => undefined);
  const subjects = coordSubjects(prefix);
  const inFlight = new Set<Promise<void>>();

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
      warn(`dropped a request on ${msg.subject} whose reply subject is outside the inbox prefix "${inboxPrefix}" (${repliesRefused} so far)`);
    }
    return client;
  };

  const onLocate = async (msg: Msg): Promise<void> => {
    // A bare publish (no reply subject) asks nothing; it must not assign a location either.
    const client = answerable(msg);
    if (client === undefined) return;
    try {
      const location = parseLocateRequest(decodeBody(msg.data, "locate request"));
      respondBody(msg, await locate(location, client));
    } catch (err) {
      respondError(msg, err, err instanceof ServerDownError ? { [SERVER_HEADER]: err.server } : {});
    }
  };

  const locate = async (location: string, client: string): Promise<LocateReply> => {
    // Look up and (if absent) assign without an `await` in between, so two requests for the same
    // new location cannot both decide to assign it; the second one finds the pending promise.
    const found = state.assignment(location);
    const existing = found instanceof Promise ? await found : found;
    if (existing !== undefined) {
      if (state.isLive(existing.server)) return { server: existing.server };
      throw serverDown(location, existing.server);
    }
    const candidates = state.liveCandidates();
    if (candidates.length === 0) throw noLiveServer();
    admitNewLocation(client);
    const server = pickServer(location, candidates);
    await state.assign(location, server);
    return { server };
  };

  /** Spends the tokens of one new assignment, or refuses it; runs with no await before `assign`. */
  const admitNewLocation = (client: string): void => {
    if (state.assignmentCount() >= limits.assignmentsMax) {
      throw new StrataError("TOO_LARGE", `the coordinator holds ${state.assignmentCount()} locations (assignmentsMax); no new location can be placed. Raise assignmentsMax or run another cluster`);
    }
    if (!perClient.take(client)) {
      throw new StrataError("UNAVAILABLE", `this client placed new locations faster than ${limits.assignPerClientPerSecMax}/s (assignPerClientPerSecMax); retry shortly`);
    }
    if (!overall.take("all")) {
      perClient.refund(client);
      throw new StrataError("UNAVAILABLE", `new locations are being placed faster than ${limits.assignPerSecMax}/s (assignPerSecMax); retry shortly`);
    }
  };

  const serverDown = (location: string, server: string): ServerDownError => {
    const last = state.lastHeartbeatAt(server);
    const ago = last === undefined ? "never" : `${Math.max(0, Math.round((Date.now() - last) / 1000))} s ago`;
    return new ServerDownError(
      server,
      `location "${location}" is held by server "${server}", which is down (last heartbeat ${ago}; live means one within ${serverTtlMs} ms). ` +
        `Start server "${server}" again with the same --id and --data; this coordinator version does not move locations to another server.`,
    );
  };

  const noLiveServer = (): StrataError => {
    const known = state.knownServerIds();
    const which = known.length === 0 ? "no server has ever sent a heartbeat" : `known but down: ${known.slice(0, 20).join(", ")}`;
    return new StrataError("UNAVAILABLE", `no persistence server is live (${which}); start one with: strata server --id ID --data DIR --nats URL`);
  };

  const onServers = (msg: Msg): void => {
    if (answerable(msg) === undefined) return;
    try {
      // The body is optional; if one is sent it must at least be CBOR, so garbage is reported.
      if (msg.data.byteLength > 0) decodeBody(msg.data, "servers request");
      const reply: ServersReply = { servers: state.view() };
      respondBody(msg, reply);
    } catch (err) {
      respondError(msg, err);
    }
  };

  const onHeartbeat = (msg: Msg): void => {
    try {
      const hb = parseHeartbeat(decodeBody(msg.data, "heartbeat"));
      const kind = state.heartbeat(hb);
      if (kind === "duplicate") {
        warn(`two processes heartbeat as server "${hb.id}" (different startedAt); each server needs its own --id`);
      } else if (kind !== "seen") {
        event(`server ${hb.id} ${kind === "new" ? "joined" : "restarted"}`);
      }
      if (msg.reply && answerable(msg) !== undefined) respondBody(msg, { ok: true });
    } catch (err) {
      warn(`ignored a heartbeat: ${(err as Error).message}`);
      if (msg.reply && answerable(msg) !== undefined) respondError(msg, err);
    }
  };

  const subscribe = (subject: string, handler: (msg: Msg) => void | Promise<void>): Subscription =>
    options.nc.subscribe(subject, {
      callback: (err, msg) => {
        if (err) {
          warn(`subscription to ${subject} failed: ${err.message}`);
          return;
        }
        const result = handler(msg);
        if (result instanceof Promise) track(result);
      },
    });

  let subs: Subscription[];
  try {
    subs = [subscribe(subjects.locate, onLocate), subscribe(subjects.servers, onServers), subscribe(subjects.heartbeat, onHeartbeat)];
    // Once flushed, the nats-server has the subscriptions: a request sent after `startCoordinator`
    // resolves is answered rather than refused with "no responders".
    await options.nc.flush();
  } catch (err) {
    await state.close();
    throw err;
  }

  let stopping: Promise<void> | undefined;
  return {
    stats: () => ({ assignments: state.assignmentCount(), repliesRefused }),
    stop() {
      stopping ??= (async () => {
        await Promise.allSettled(subs.map((s) => (s.isClosed() ? Promise.resolve() : s.drain())));
        await Promise.allSettled([...inFlight]);
        await state.close();
      })();
      return stopping;
    },
  };
}

/** UNAVAILABLE because the location's own server is down; the reply names it in `Strata-Server`. */
class ServerDownError extends StrataError {
  constructor(readonly server: string, message: string) {
    super("UNAVAILABLE", message);
  }
}

function positiveInt(value: unknown, name: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0) {
    throw new StrataError("INVALID_ARGUMENT", `${name} must be a positive integer, got ${String(value)}`);
  }
  return value;
}

/**
 * Passes on the 1st, 2nd, 4th, 8th… warning: a flood of bad heartbeats (a misconfigured server)
 * must not flood the log, but the count still shows how bad it is.
 */
function throttled(sink: (message: string) => void): (message: string) => void {
  let count = 0;
  return (message) => {
    count += 1;
    if ((count & (count - 1)) === 0) sink(count === 1 ? message : `${message} (${count} warnings so far)`);
  };
}

/**
 * The coordinator (first version): knows which persistence servers are live and answers which
 * server holds a location.
 *
 * - Servers register simply by heartbeating on `P.coord.heartbeat` (see heartbeat.ts); a server
 *   is live while its heartbeats arrive within `serverTtlMs`.
 * - `P.coord.locate` `{ location }` → `{ server }`. A location keeps the server it was first
 *   given (sticky). A new location goes to a live server chosen by weighted rendezvous hashing
 *   (coordinator-placement.ts). If the location's server is down, the answer is UNAVAILABLE
 *   (retryable) naming the server in `Strata-Server`: this version never moves a location,
 *   because moving safely needs leases with epochs (DESIGN.md), which come later.
 * - `P.coord.servers` → `{ servers: ServerView[] }` for operators.
 *
 * Every wire input is parsed in coordinator-protocol.ts; a malformed request gets an error reply
 * and never reaches the state. Nothing a client sends can crash the process: each handler ends
 * in an error reply, and only `assert` failures (bugs) escape.
 */
import type { Msg, NatsConnection, Subscription } from "nats";
import { StrataError } from "../errors.js";
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
} from "./coordinator-protocol.js";
import { CoordinatorState } from "./coordinator-state.js";

/** Defaults of the coordinator; each can be overridden in `startCoordinator`'s options. */
export const COORDINATOR_DEFAULTS = Object.freeze({
  /** A server is live while its heartbeats arrive within this (5 missed 1 s heartbeats). */
  serverTtlMs: 5000,
  /** Most servers remembered; bounds memory and the size of the `servers` reply. */
  serversMax: 1000,
  /** Most new locations being recorded at once; beyond this locate answers UNAVAILABLE. */
  pendingAssignmentsMax: 10_000,
});

export interface CoordinatorOptions {
  nc: NatsConnection;
  /** Directory of the coordinator's LMDB state; one coordinator per directory. */
  dataDir: string;
  prefix?: string;
  serverTtlMs?: number;
  serversMax?: number;
  pendingAssignmentsMax?: number;
  /** Problems worth an operator's attention (malformed heartbeats, refused servers). */
  onWarning?: (message: string) => void;
  /** Notable events: a server joined or restarted. */
  onEvent?: (message: string) => void;
}

export interface Coordinator {
  /** Stops answering, waits for in-flight requests, closes the state. Does not close `nc`. */
  stop(): Promise<void>;
}

export async function startCoordinator(options: CoordinatorOptions): Promise<Coordinator> {
  const prefix = validatePrefix(options.prefix ?? DEFAULT_PREFIX);
  const serverTtlMs = positiveInt(options.serverTtlMs ?? COORDINATOR_DEFAULTS.serverTtlMs, "serverTtlMs");
  const state = CoordinatorState.open(options.dataDir, {
    serverTtlMs,
    serversMax: positiveInt(options.serversMax ?? COORDINATOR_DEFAULTS.serversMax, "serversMax"),
    pendingAssignmentsMax: positiveInt(options.pendingAssignmentsMax ?? COORDINATOR_DEFAULTS.pendingAssignmentsMax, "pendingAssignmentsMax"),
    now: Date.now,
    monotonicNow: () => performance.now(),
  });
  const warn = throttled(options.onWarning ?? ((m) => process.emitWarning(m, "StrataWarning")));
  const event = options.onEvent ?? (() => undefined);
  const subjects = coordSubjects(prefix);
  const inFlight = new Set<Promise<void>>();

  const track = (work: Promise<void>): void => {
    inFlight.add(work);
    void work.finally(() => inFlight.delete(work));
  };

  const onLocate = async (msg: Msg): Promise<void> => {
    // A bare publish (no reply subject) asks nothing; it must not assign a location either.
    if (!msg.reply) return;
    try {
      const location = parseLocateRequest(decodeBody(msg.data, "locate request"));
      respondBody(msg, await locate(location));
    } catch (err) {
      respondError(msg, err, err instanceof ServerDownError ? { [SERVER_HEADER]: err.server } : {});
    }
  };

  const locate = async (location: string): Promise<LocateReply> => {
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
    const server = pickServer(location, candidates);
    await state.assign(location, server);
    return { server };
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
      if (msg.reply) respondBody(msg, { ok: true });
    } catch (err) {
      warn(`ignored a heartbeat: ${(err as Error).message}`);
      respondError(msg, err);
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

/**
 * A persistence server's heartbeat: how it registers with the coordinator and stays live.
 *
 * It publishes `{ id, startedAt, load }` (CBOR) on `P.coord.heartbeat` at once and then every
 * `intervalMs`. It is a plain publish, not a request: the coordinator may be down or restarting,
 * and a server must keep serving its locations regardless. `startedAt` is fixed for the life of
 * the heartbeat so the coordinator can tell a restart (new value) from a pause.
 *
 * Publishing never throws out of the timer: while the connection is reconnecting nats.js buffers
 * the message, and once it is closed the publish fails and is simply skipped.
 */
import type { NatsConnection } from "nats";
import { StrataError } from "../../errors.js";
import type { HeartbeatBody, ServerLoad } from "../wire/coordinator-protocol.js";
import { heartbeatSubject, validatePrefix, validateServerId } from "../wire/subjects.js";
import { encode } from "../wire/wire-codec.js";

export const HEARTBEAT_INTERVAL_MS_DEFAULT = 1000;

export interface HeartbeatOptions {
  prefix: string;
  /** The server's id; it becomes a subject token, so 1..64 of [-_a-zA-Z0-9]. */
  id: string;
  /** Must be well below the coordinator's serverTtlMs (default 5000). */
  intervalMs?: number;
  /** What the server reports about itself; called once per beat, so it must be cheap. */
  load?: () => ServerLoad;
  /** When the server started (ms since the epoch); default: when `startHeartbeat` is called. */
  startedAt?: number;
}

export interface Heartbeat {
  stop(): void;
}

export function startHeartbeat(nc: NatsConnection, options: HeartbeatOptions): Heartbeat {
  const subject = heartbeatSubject(validatePrefix(options.prefix));
  const id = validateServerId(options.id);
  const intervalMs = options.intervalMs ?? HEARTBEAT_INTERVAL_MS_DEFAULT;
  if (!Number.isSafeInteger(intervalMs) || intervalMs <= 0) {
    throw new StrataError("INVALID_ARGUMENT", `heartbeat intervalMs must be a positive integer, got ${String(intervalMs)}`);
  }
  const startedAt = options.startedAt ?? Date.now();

  const beat = (): void => {
    if (nc.isClosed()) return;
    let load: ServerLoad = {};
    try {
      load = options.load?.() ?? {};
    } catch {
      // A failing load probe must not stop the server from counting as live.
    }
    const body: HeartbeatBody = { id, startedAt, load };
    try {
      nc.publish(subject, encode(body));
    } catch {
      // Closed or draining connection: the next beat (if any) tries again.
    }
  };

  beat();
  const timer = setInterval(beat, intervalMs);
  // A heartbeat alone must not keep a process alive that has nothing else to do.
  timer.unref();
  return {
    stop() {
      clearInterval(timer);
    },
  };
}

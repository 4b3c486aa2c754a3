/**
 * One process per name on a NATS deployment: one strata server per server id, one coordinator per
 * prefix. Core NATS delivers a request to every subscriber, so two processes with one name both
 * take every request on its subjects and both answer: two coordinators assign locations each on
 * their own (two owners of one location), and a second server started with an id in use but
 * another data directory answers for locations whose records it does not hold (it acknowledges
 * writes that the first never sees, and reads miss what the first acknowledged). The data
 * directory's lock (../../data-lock.ts) keeps a second process off one directory; this keeps one
 * off a name, across hosts.
 *
 * How: before it subscribes to anything, a process asks on its presence subject
 * (`P.s.<id>.presence` for a server, `P.coord.presence` for a coordinator). nats-server answers
 * "no responders" at once when nobody listens: the name is free. An answer names the process that
 * holds it (host, pid, data directory, start time), and startup is refused with CONFLICT, that
 * answer in the message. Then the process subscribes and answers every probe for as long as it
 * runs.
 *
 * No answer within `presenceProbeMs` is not a conflict: startup goes on, with a warning. That is a
 * subscriber that does not answer (a process on a host that died, whose connection nats-server has
 * not yet dropped; refusing would keep the server from restarting until it does), or permissions
 * that do not admit the probe (deploy/ grants it). Not covered: two processes started within the
 * same few milliseconds, both asking before either subscribed.
 */
import os from "node:os";
import type { Msg, NatsConnection, Subscription } from "nats";
import { StrataError } from "../../errors.js";
import type { Logger } from "../../logger.js";
import { decodeUntrusted, encode } from "./wire-codec.js";

/** What a process that holds a name answers about itself. */
export interface PresenceInfo {
  /** "server <id>" or "coordinator". */
  role: string;
  host: string;
  pid: number;
  dir: string;
  startedAt: string;
}

export interface Presence {
  /** Stops answering probes (the process is stopping). */
  close(): void;
}

/** nats.js's error code for a request nobody subscribes to. */
const NO_RESPONDERS = "503";

/**
 * Refuses (CONFLICT) when another process answers on `subject`; otherwise subscribes to it and
 * answers probes with `info` until `close()`. Call it before subscribing to anything else.
 */
export async function claimPresence(nc: NatsConnection, subject: string, info: Omit<PresenceInfo, "host" | "pid" | "startedAt">, probeMs: number, logger: Logger): Promise<Presence> {
  const mine: PresenceInfo = { ...info, host: os.hostname(), pid: process.pid, startedAt: new Date().toISOString() };
  let other: PresenceInfo | undefined;
  try {
    const reply = await nc.request(subject, encode({ probe: mine.role }), { timeout: probeMs });
    other = parseInfo(reply.data);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code !== NO_RESPONDERS) {
      logger.warn(
        { event: "presence_unchecked", subject, error: (err as Error).message },
        `could not check that no other ${mine.role} runs under this name (${(err as Error).message} on ${subject}); going on. A subscriber that does not answer is a process nats-server has not yet dropped, or permissions that do not allow the probe (deploy/nats-server.conf)`,
      );
    }
  }
  if (other !== undefined) {
    throw new StrataError(
      "CONFLICT",
      `another ${other.role} already runs under this name on this NATS: pid ${other.pid} on host "${other.host}", data directory "${other.dir}", started ${other.startedAt}. Each server needs its own --id, and a deployment one coordinator per prefix; stop that process first if this one is to replace it`,
    );
  }
  const sub: Subscription = nc.subscribe(subject, {
    callback: (err: Error | null, msg: Msg) => {
      if (err !== null || !msg.reply) return;
      try {
        msg.respond(encode({ ...mine }));
      } catch {
        // The connection is closing.
      }
    },
  });
  return { close: () => sub.unsubscribe() };
}

function parseInfo(data: Uint8Array): PresenceInfo {
  let body: unknown;
  try {
    body = decodeUntrusted(data, "presence answer");
  } catch {
    body = undefined;
  }
  const b = (typeof body === "object" && body !== null ? body : {}) as Record<string, unknown>;
  const text = (v: unknown, fallback: string) => (typeof v === "string" ? v.slice(0, 256) : fallback);
  return { role: text(b.role, "process"), host: text(b.host, "?"), pid: typeof b.pid === "number" ? b.pid : 0, dir: text(b.dir, "?"), startedAt: text(b.startedAt, "?") };
}

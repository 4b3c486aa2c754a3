/**
 * Early detection of a server that vanished with requests in flight. A request the server received
 * and never answered because it died (kill -9, host lost) would otherwise wait the client's whole
 * attempt budget. While a reply reader (reply-reader.ts) has waited `serverProbeMs` with no
 * message, it sends `{ op: "ping" }` on the waiting request's own subject, with a reply channel of
 * the client's one reply subscription (client-transport.ts): same subject class, server and
 * location, so nats-server permissions treat the ping as they treated the request.
 *
 * Invariant, no false positives: only nats-server's "no responders" status (nobody subscribes to
 * that subject any more: the server's connection is gone) counts as gone. An answer of any kind
 * (the server's `{}`, an older server's unknown-op error, an UNAVAILABLE while it is busy or
 * stopping), a ping that times out, a refused publish: all mean "unknown", and the request keeps
 * waiting, checked again after `serverProbeMs`. A paused (SIGSTOP) server keeps its subscriptions,
 * so it is never declared gone; its requests time out as before. One ping per reader at a time,
 * and readers waiting on the same subject share the ping in flight, so a slow server with many
 * requests waiting gets one ping per subject per `serverProbeMs`, not one per request.
 */
import { StrataError } from "../../errors.js";
import { encode } from "../wire/wire-codec.js";
import { isNoResponders } from "../wire/wire-errors.js";
import type { Target } from "./client-call.js";
import type { Transport } from "./client-transport.js";

const PING = encode({ op: "ping" });

/** Pings in flight per client and subject (an entry lives until its ping settles). */
const pings = new WeakMap<Transport, Map<string, Promise<boolean>>>();

/**
 * Whether nats-server says nobody subscribes to `subject` any more: a ping sent there is answered
 * with "no responders" within `waitMs`. False for every other outcome (see the file comment).
 * Callers asking while a ping to the same subject is in flight share its answer.
 */
export function serverGone(transport: Transport, subject: string, waitMs: number): Promise<boolean> {
  let byTransport = pings.get(transport);
  if (byTransport === undefined) pings.set(transport, (byTransport = new Map()));
  const shared = byTransport.get(subject);
  if (shared !== undefined) return shared;
  const map = byTransport;
  const ping = pingOnce(transport, subject, waitMs).finally(() => map.delete(subject));
  map.set(subject, ping);
  return ping;
}

async function pingOnce(transport: Transport, subject: string, waitMs: number): Promise<boolean> {
  let ch;
  try {
    ch = transport.open();
    transport.publish(subject, PING, ch);
    const msg = await ch.next(waitMs, () => new StrataError("TIMEOUT", `no answer to a ping on ${subject}`));
    return isNoResponders(msg);
  } catch {
    return false; // a closed client, a refused publish, a ping timeout: not known to be gone
  } finally {
    ch?.close();
  }
}

/**
 * The error a request in flight ends with when its server vanished: a read was not answered and
 * is asked again after re-locating (UNAVAILABLE); a write may have been applied before the server
 * died (TIMEOUT, which appends with a msgId retry).
 */
export function vanished(target: Target): StrataError {
  const gone = `the server went away while the request for ${target.what} was in flight (nats-server has no subscriber for its subject any more: it was killed or lost its connection)`;
  if (target.write) return new StrataError("TIMEOUT", `${gone}; the write may or may not be applied (use msgId on appends to retry exactly once)`);
  return new StrataError("UNAVAILABLE", `${gone}; asking again after locating the location`);
}

/**
 * Counts the requests sent to strata servers, by `op`, as a raw subscriber on the request subjects
 * sees them (so a test can assert that something was served without a request).
 *
 *   const requests = await countRequests(nc, "strata.*.kc.>");
 *   requests.count("kv.get");
 */
import type { NatsConnection } from "nats";
import { decodeMap } from "../../src/net/wire/wire-codec.js";

export interface RequestCounter {
  /** The ops seen and how often ("?" for upload chunks, which are not CBOR maps). */
  readonly byOp: Map<string, number>;
  count(op: string): number;
}

/** Subscribes to `subject` (a wildcard over request subjects) and flushes, so counting has begun. */
export async function countRequests(nc: NatsConnection, subject: string): Promise<RequestCounter> {
  const byOp = new Map<string, number>();
  nc.subscribe(subject, {
    callback: (_err, msg) => {
      let op = "?";
      try {
        op = String(decodeMap(msg.data, "a request").op);
      } catch {
        // a chunk of an upload
      }
      byOp.set(op, (byOp.get(op) ?? 0) + 1);
    },
  });
  await nc.flush();
  return { byOp, count: (op) => byOp.get(op) ?? 0 };
}

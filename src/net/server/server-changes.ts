/**
 * The change feed: every committed change of a location is published on `P.c.<location tokens>`.
 *
 * A message carries a CBOR array of changes of one location in revision order: the changes one
 * group commit produced together go out together (as many messages as max_payload requires), so
 * a burst of writes costs a few messages rather than one per write. A change too large for one
 * message goes out without its value and with `chunked: true`, like the engine's own changes of
 * chunked values; readers fetch such a value with get.
 *
 * A server under a coordinator sends the epoch the location is held under in the header
 * `Strata-Epoch` (EPOCH_HEADER): a watcher that sees a higher epoch than before asks the new owner
 * where its history may differ from what it was shown (docs/failover.md).
 */
import { headers as natsHeaders, type NatsConnection } from "nats";
import type { Change } from "../../types.js";
import { EPOCH_HEADER, changeSubject } from "../wire/subjects.js";
import { encode, joinArray } from "../wire/wire-codec.js";

/** Bytes of a change message's array header (at most 5) and a margin. */
const ARRAY_OVERHEAD_BYTES = 16;

export class ChangeFeed {
  private pending = new Map<string, Change[]>();
  /** The epoch of each pending location's changes (absent for a standalone server). */
  private epochs = new Map<string, number>();
  private scheduled = false;
  published = 0;

  constructor(
    private readonly nc: NatsConnection,
    private readonly prefix: string,
    private readonly maxPayload: () => number,
    private readonly onWarning: (message: string) => void,
  ) {}

  /** Queues a committed change; the changes of this turn go out once it ends (a microtask). */
  add(change: Change, epoch?: number): void {
    if (epoch !== undefined) this.epochs.set(change.location, epoch);
    const list = this.pending.get(change.location);
    if (list !== undefined) list.push(change);
    else this.pending.set(change.location, [change]);
    if (!this.scheduled) {
      this.scheduled = true;
      queueMicrotask(() => this.flush());
    }
  }

  /** Publishes everything queued (also called before the server drains its connection). */
  flush(): void {
    this.scheduled = false;
    const pending = this.pending;
    if (pending.size === 0) return;
    this.pending = new Map();
    const epochs = this.epochs;
    this.epochs = new Map();
    const max = this.maxPayload() - ARRAY_OVERHEAD_BYTES;
    for (const [location, changes] of pending) {
      const subject = changeSubject(this.prefix, location);
      let group: Uint8Array[] = [];
      let bytes = 0;
      for (const change of changes) {
        let encoded = encode(change);
        if (encoded.byteLength > max) encoded = encode(withoutValue(change));
        if (group.length > 0 && bytes + encoded.byteLength > max) {
          this.publish(subject, location, group, epochs.get(location));
          group = [];
          bytes = 0;
        }
        group.push(encoded);
        bytes += encoded.byteLength;
      }
      this.publish(subject, location, group, epochs.get(location));
    }
  }

  private publish(subject: string, location: string, group: Uint8Array[], epoch: number | undefined): void {
    try {
      if (epoch === undefined) {
        this.nc.publish(subject, joinArray(group));
      } else {
        const h = natsHeaders();
        h.set(EPOCH_HEADER, String(epoch));
        this.nc.publish(subject, joinArray(group), { headers: h });
      }
      this.published += group.length;
    } catch (err) {
      this.onWarning(`could not publish ${group.length} change(s) of ${location}: ${(err as Error).message}`);
    }
  }
}

function withoutValue(change: Change): Change {
  const empty = new Uint8Array(0);
  if (change.op === "set" && change.kind === "stream") return { ...change, message: { ...change.message, value: empty }, chunked: true };
  if (change.op === "set" && change.kind === "kv") return { ...change, entry: { ...change.entry, value: empty }, chunked: true };
  return change;
}

/**
 * The change feed: every committed change of a location is published on `P.c.<location tokens>`.
 *
 * A message carries a CBOR array of changes of one location in revision order: the changes one
 * group commit produced together go out together (as many messages as max_payload requires), so
 * a burst of writes costs a few messages rather than one per write.
 *
 * Values travel inline only up to `changeInlineBytesMax` (NetLimits): a larger value goes out
 * without its bytes (an empty value) and with `omitted: true`. Most writes are watched by nobody,
 * and a value in the feed crosses nats-server a second time (measured at 4 KiB and 256 in flight:
 * a quarter of the server's and of nats-server's CPU per append). A watcher (client/watch.ts)
 * reads omitted values back with one `changes { after }` request per feed message it needs:
 * store.changesSince reads them from the log, by revision, so the watcher sees exactly the write
 * that produced the change (a get could return a newer one). A change too large for one message
 * even so goes out with `chunked: true`, like the engine's own changes of chunked values; readers
 * fetch such a value with get.
 *
 * A server under a coordinator sends the epoch the location is held under in the header
 * `Strata-Epoch` (EPOCH_HEADER): a watcher that sees a higher epoch than before asks the new owner
 * where its history may differ from what it was shown (docs/failover.md).
 */
import { headers as natsHeaders, type NatsConnection } from "nats";
import type { Logger } from "../../logger.js";
import type { Change, KvEntry, StoredMessage } from "../../types.js";
import { EPOCH_HEADER, changeSubject } from "../wire/subjects.js";
import { encode, joinArray } from "../wire/wire-codec.js";

/** Bytes of a change message's array header (at most 5) and a margin. */
const ARRAY_OVERHEAD_BYTES = 16;
/** About the bytes of a change besides its value (headers aside): picks the one-encode path. */
const CHANGE_FIELDS_BYTES = 256;

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
    private readonly logger: Logger,
    /** changeInlineBytesMax: larger values go out without their bytes, `omitted: true`. */
    private readonly inlineBytesMax = Number.MAX_SAFE_INTEGER,
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
      const epoch = epochs.get(location);
      let inline = 0;
      const wire = changes.map((c) => {
        const n = valueBytes(c);
        if (n > this.inlineBytesMax) return withoutValue(c, "omitted");
        inline += n;
        return c;
      });
      // Usually all of a location's changes fit one message: one encode (cbor-x's cost is mostly
      // per call and per field, not per byte). Else they are split change by change.
      if (inline + CHANGE_FIELDS_BYTES * wire.length <= max) {
        const whole = encode(wire);
        if (whole.byteLength <= max) {
          this.send(subject, location, whole, wire.length, epoch);
          continue;
        }
      }
      let group: Uint8Array[] = [];
      let bytes = 0;
      for (const change of wire) {
        let encoded = encode(change);
        if (encoded.byteLength > max) encoded = encode(withoutValue(change, "chunked"));
        if (group.length > 0 && bytes + encoded.byteLength > max) {
          this.send(subject, location, joinArray(group), group.length, epoch);
          group = [];
          bytes = 0;
        }
        group.push(encoded);
        bytes += encoded.byteLength;
      }
      this.send(subject, location, joinArray(group), group.length, epoch);
    }
  }

  private send(subject: string, location: string, data: Uint8Array, count: number, epoch: number | undefined): void {
    try {
      if (epoch === undefined) {
        this.nc.publish(subject, data);
      } else {
        const h = natsHeaders();
        h.set(EPOCH_HEADER, String(epoch));
        this.nc.publish(subject, data, { headers: h });
      }
      this.published += count;
    } catch (err) {
      this.logger.warn({ event: "change_publish_failed", location, changes: count, error: (err as Error).message }, `could not publish ${count} change(s) of ${location}: ${(err as Error).message}`);
    }
  }
}

/** The bytes of a set's value; 0 for deletes and for chunked values (which travel without theirs). */
function valueBytes(change: Change): number {
  if (change.op !== "set") return 0;
  return change.kind === "stream" ? change.message.value.byteLength : change.entry.value.byteLength;
}

/**
 * `change` without its value, flagged `omitted` (read it back with `changes`) or `chunked` (read
 * it with get). Written out without object spreads: this runs for every large write.
 */
function withoutValue(change: Change, flag: "omitted" | "chunked"): Change {
  if (change.op !== "set") return change;
  const empty = new Uint8Array(0);
  let out: Change;
  if (change.kind === "stream") {
    const m = change.message;
    const message: StoredMessage = { seq: m.seq, value: empty, timestamp: m.timestamp };
    if (m.headers !== undefined) message.headers = m.headers;
    out = { location: change.location, revision: change.revision, timestamp: change.timestamp, kind: "stream", op: "set", seq: change.seq, message, size: change.size, chunked: flag === "chunked" || change.chunked };
  } else {
    const e = change.entry;
    const entry: KvEntry = { key: e.key, value: empty, revision: e.revision, timestamp: e.timestamp };
    if (e.headers !== undefined) entry.headers = e.headers;
    if (e.expiresAt !== undefined) entry.expiresAt = e.expiresAt;
    out = { location: change.location, revision: change.revision, timestamp: change.timestamp, kind: "kv", op: "set", key: change.key, entry, size: change.size, chunked: flag === "chunked" || change.chunked };
  }
  if (flag === "omitted" && !out.chunked) (out as Change & { omitted?: true }).omitted = true;
  return out;
}

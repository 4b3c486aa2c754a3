/**
 * Write operations and how each one is decided against the current state.
 *
 * `prepare` turns a validated operation into the log record that will carry it (assigning seq,
 * revision and timestamp) or into an error (CONFLICT, WRONG_KIND) or into a result that needs
 * no record (a duplicate msgId, a delete of something absent). It sees the index plus the effects
 * of the operations earlier in the same group-commit batch (`BatchView`), and those of the batch
 * still being written before it (its `parent` view, until that batch is in the index), so batches
 * decide exactly as if their operations had been committed one by one. That view of the state,
 * and how an operation stages its effects in it, is ./batch-state.ts (`BatchView` extends it);
 * this file decides each kind of operation.
 *
 * Per-location limits (./limit-rules.ts) are decided here too, so they hold in the same commit as
 * the write: a refused write stages nothing; a stream with `discard: "old"` gets an `sdelall` of
 * its oldest messages right after the write that put it over (`Prepared.follow`). To decide that
 * exactly, the view keeps each touched location's message/key count and value bytes (`Usage`)
 * and, per stream, the seqs the batch set (with their sizes) or deleted.
 */
import { BatchState, type MetaView } from "./batch-state.js";
import { StrataError } from "./errors.js";
import { msgIdHit } from "./index/index-reads.js";
import { boundsUsage, checkConfigChange, checkGrowth, checkValueSize, deniesDelete, deniesOverwrite, excessOf, type Usage } from "./limit-rules.js";
import type { LogRecord } from "./log/record.js";
import { seqMax } from "./limits.js";
import type { LocationLimits } from "./types.js";
import type { Prepared, ValueParts, WriteOp } from "./write-op.js";

export type { Prepared, WriteOp } from "./write-op.js";
export { opBytes } from "./write-op.js";

export class BatchView extends BatchState {
  prepare(op: WriteOp): Prepared {
    switch (op.op) {
      case "chunk":
        return { record: { t: "chunk", data: op.data } };
      case "append":
        return this.append(op);
      case "sset": {
        const m = this.meta(op.loc, "stream");
        deniesOverwrite(op.loc, this.limitsFor(op.loc, m), op.seq <= m.lastSeq && this.seqSize(op.loc, m, op.seq) !== undefined);
        return this.streamSet(op, op.seq, op.timestamp);
      }
      case "sdel":
        return this.streamDelete(op);
      case "sdelall":
        deniesDelete(op.loc, "stream", this.limitsFor(op.loc, this.meta(op.loc, "stream")));
        return this.streamDeleteAll(op);
      case "sdrop":
        return this.streamDrop(op);
      case "config":
        return this.config(op);
      case "kset":
        return this.kvSet(op);
      case "kdel":
        deniesDelete(op.loc, "kv", this.limitsFor(op.loc, this.meta(op.loc, "kv")));
        return this.kvDelete(op);
      case "kexpire":
        return this.kvDelete(op);
      case "import":
        // Nothing is decided on the location's old state once it is being replaced.
        this.importing.add(op.record.loc);
        return { record: op.record };
    }
  }

  private append(op: Extract<WriteOp, { op: "append" }>): Prepared {
    const m = this.meta(op.loc, "stream");
    const limits = this.limitsFor(op.loc, m);
    const window = limits?.dedupWindowMs ?? this.limits.dedupWindowMs;
    // A window of 0 turns exactly-once off for the stream: msgIds are neither looked up nor kept.
    const msgId = window > 0 ? op.msgId : undefined;
    if (msgId !== undefined) {
      const dk = `${op.loc}\0${msgId}`;
      const seen = this.overlayDedup(dk) ?? this.storedDedup(m, msgId, window);
      if (seen !== undefined) return { result: seen };
    }
    if (m.lastSeq >= seqMax) {
      throw new StrataError("TOO_LARGE", `stream "${op.loc}" is at seq ${m.lastSeq}, and seqMax is ${seqMax}; append is impossible, use set() with a smaller seq or a new stream`);
    }
    if (op.expectedLastSeq !== undefined && op.expectedLastSeq !== m.lastSeq) {
      throw new StrataError("CONFLICT", `expectedLastSeq is ${op.expectedLastSeq} but the stream "${op.loc}" is at ${m.lastSeq}; re-read and retry`);
    }
    const prepared = this.streamSet(op, m.lastSeq + 1, op.timestamp);
    if (msgId !== undefined && "record" in prepared && prepared.record.t === "sset") {
      const r = prepared.record;
      this.dedup.set(`${op.loc}\0${msgId}`, { seq: r.seq, revision: r.rev, timestamp: r.ts, duplicate: true });
    }
    return prepared;
  }

  private storedDedup(m: MetaView, msgId: string, window: number): unknown {
    if (m.id === undefined) return undefined;
    const hit = msgIdHit(this.index, m.id, msgId);
    if (!hit || this.now - hit.at > window) return undefined;
    return { seq: hit.seq, revision: hit.rev, timestamp: hit.ts, duplicate: true };
  }

  private streamSet(op: { loc: string; msgId?: string } & ValueParts, seq: number, timestamp: number | undefined): Prepared {
    const m = this.meta(op.loc, "stream");
    const limits = this.limitsFor(op.loc, m);
    const tracked = boundsUsage(limits);
    let before: Usage | undefined;
    let old: number | undefined;
    if (m.count !== undefined || tracked) {
      before = this.usage(op.loc, m);
      old = seq > m.lastSeq ? undefined : this.seqSize(op.loc, m, seq);
    }
    const after = before && { count: before.count + (old === undefined ? 1 : 0), bytes: before.bytes - (old ?? 0) + op.size };
    checkValueSize(op.loc, "stream", limits, op.size);
    if (before && after) checkGrowth(op.loc, "stream", limits, before, after);
    const rev = this.bump(m, "stream");
    if (after) {
      m.count = after.count;
      m.bytes = after.bytes;
    }
    if (seq > m.lastSeq) m.lastSeq = seq;
    this.seqMap(op.loc).set(seq, op.size);
    const record: LogRecord = { t: "sset", loc: op.loc, seq, rev, ts: timestamp ?? this.now, value: op.value, size: op.size };
    if (op.headers) record.headers = op.headers;
    if (op.msgId !== undefined) {
      record.msgId = op.msgId;
      record.at = this.now;
    }
    if (op.chunks) record.chunks = op.chunks;
    const follow = tracked ? this.dropOldest(op.loc, m, limits) : undefined;
    return follow ? { record, follow } : { record };
  }

  /**
   * discard "old": the sdelall of the oldest messages that no longer fit (undefined when all fit),
   * staged in the overlay. Walks from the first seq, as far as the excess reaches.
   */
  private dropOldest(loc: string, m: MetaView, limits: LocationLimits | undefined): LogRecord | undefined {
    const excess = excessOf(limits, this.usage(loc, m));
    if (excess.count === 0 && excess.bytes === 0) return undefined;
    const gone = { count: 0, bytes: 0, seq: 0 };
    this.walkSeqs(loc, m, (seq, size) => {
      gone.count += 1;
      gone.bytes += size;
      gone.seq = seq;
      return gone.count < excess.count || gone.bytes < excess.bytes;
    });
    if (gone.seq === 0) return undefined;
    const record = this.deleteUpTo(loc, m, gone.seq);
    m.count! -= gone.count;
    m.bytes! -= gone.bytes;
    return record;
  }

  private streamDelete(op: { loc: string; seq: number }): Prepared {
    const m = this.meta(op.loc, "stream");
    deniesDelete(op.loc, "stream", this.limitsFor(op.loc, m));
    const size = this.seqSize(op.loc, m, op.seq);
    if (size === undefined) return { result: { deleted: false, revision: m.rev } };
    const rev = this.bump(m, "stream");
    if (m.count !== undefined) {
      m.count -= 1;
      m.bytes! -= size;
    }
    this.seqMap(op.loc).set(op.seq, false);
    return { record: { t: "sdel", loc: op.loc, seq: op.seq, rev, ts: this.now } };
  }

  private streamDeleteAll(op: { loc: string; endSeq?: number }): Prepared {
    const m = this.meta(op.loc, "stream");
    const endSeq = Math.min(op.endSeq ?? m.lastSeq, m.lastSeq);
    if (m.kind === undefined || endSeq < 1) return { result: { count: 0, revision: m.rev } };
    if (boundsUsage(this.limitsFor(op.loc, m))) {
      // Limits decide on the usage: count what goes (as the index apply will).
      this.usage(op.loc, m);
      const gone = { count: 0, bytes: 0 };
      this.walkSeqs(op.loc, m, (_seq, size) => ((gone.count += 1), (gone.bytes += size), true), endSeq);
      m.count! -= gone.count;
      m.bytes! -= gone.bytes;
    } else {
      m.count = m.bytes = undefined;
    }
    return { record: this.deleteUpTo(op.loc, m, endSeq) };
  }

  /** The age sweep's drop: only when the entries up to `endSeq` are still the ones it read. */
  private streamDrop(op: Extract<WriteOp, { op: "sdrop" }>): Prepared {
    const m = this.meta(op.loc, "stream");
    const unchanged = { count: 0 };
    const noop = { result: { count: 0, revision: m.rev } };
    if (m.id === undefined) return noop;
    const seen = new Map(op.seen.map(([seq, seg, off]) => [seq, `${seg}/${off}`]));
    for (const seq of this.overlaySeqKeys(op.loc)) if (seq <= op.endSeq && typeof this.overlaySeq(op.loc, seq) === "number") return noop;
    for (const { key, value } of this.index.seqs.getRange({ start: [m.id, 0], end: [m.id, op.endSeq + 1] })) {
      const seq = key[1] as number;
      if (this.overlaySeq(op.loc, seq) === false) continue;
      if (seen.get(seq) !== `${value[0]}/${value[1]}`) return noop;
      unchanged.count += 1;
    }
    if (unchanged.count === 0) return noop;
    return this.streamDeleteAll({ loc: op.loc, endSeq: op.endSeq });
  }

  private config(op: Extract<WriteOp, { op: "config" }>): Prepared {
    const m = this.meta(op.loc, op.kind);
    checkConfigChange(op.loc, op.kind, this.limitsFor(op.loc, m), op.limits);
    m.kind = op.kind;
    this.confs.set(op.loc, Object.keys(op.limits).length > 0 ? op.limits : null);
    const record: LogRecord = { t: "config", loc: op.loc, kind: op.kind, ts: this.now, limits: op.limits };
    // Lowering a stream's limits drops what no longer fits, in the same batch.
    const follow = op.kind === "stream" && boundsUsage(op.limits) ? this.dropOldest(op.loc, m, op.limits) : undefined;
    return follow ? { record, follow } : { record };
  }

  private kvSet(op: Extract<WriteOp, { op: "kset" }>): Prepared {
    const m = this.meta(op.loc, "kv");
    const current = this.kvState(op.loc, m, op.key);
    if (op.expectedRevision !== undefined) {
      const have = this.live(current) ? current.rev : 0;
      if (have !== op.expectedRevision) {
        throw new StrataError(
          "CONFLICT",
          `expectedRevision is ${op.expectedRevision} but key "${op.key}" is at revision ${have}${have === 0 ? " (absent)" : ""}; re-read and retry`,
        );
      }
    }
    const limits = this.limitsFor(op.loc, m);
    checkValueSize(op.loc, "kv", limits, op.size);
    // An entry the sweeper has not expired yet still counts (as the index counts it).
    const before = this.usage(op.loc, m);
    const after = { count: before.count + (current ? 0 : 1), bytes: before.bytes - (current?.size ?? 0) + op.size };
    checkGrowth(op.loc, "kv", limits, before, after);
    const rev = this.bump(m, "kv");
    m.count = after.count;
    m.bytes = after.bytes;
    const ttlMs = op.ttlMs ?? limits?.ttlMs;
    const expiresAt = ttlMs !== undefined ? this.now + ttlMs : undefined;
    this.kv.set(`${op.loc}\0${op.key}`, { rev, expiresAt: expiresAt ?? 0, size: op.size });
    const record: LogRecord = { t: "kset", loc: op.loc, key: op.key, rev, ts: this.now, value: op.value, size: op.size };
    if (op.headers) record.headers = op.headers;
    if (expiresAt !== undefined) record.expiresAt = expiresAt;
    if (op.chunks) record.chunks = op.chunks;
    return { record };
  }

  private kvDelete(op: Extract<WriteOp, { op: "kdel" | "kexpire" }>): Prepared {
    const m = this.meta(op.loc, "kv");
    const current = this.kvState(op.loc, m, op.key);
    if (op.op === "kexpire") {
      // Only the exact write that expired is removed; a newer write of the key stays.
      const expired = current !== null && current.rev === op.rev && current.expiresAt !== 0 && current.expiresAt <= this.now;
      if (!expired) return { result: { deleted: false, revision: m.rev } };
    } else if (!this.live(current)) {
      return { result: { deleted: false, revision: m.rev } };
    }
    const rev = this.bump(m, "kv");
    const u = this.usage(op.loc, m);
    m.count = u.count - 1;
    m.bytes = u.bytes - current.size;
    this.kv.set(`${op.loc}\0${op.key}`, null);
    const record: LogRecord = { t: "kdel", loc: op.loc, key: op.key, rev, ts: this.now };
    if (op.op === "kexpire") record.expired = true;
    return { record };
  }
}

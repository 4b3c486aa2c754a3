/**
 * Write operations and how each one is decided against the current state.
 *
 * `prepare` turns a validated operation into the log record that will carry it (assigning seq,
 * revision and timestamp) or into an error (CONFLICT, WRONG_KIND) or into a result that needs
 * no record (a duplicate msgId, a delete of something absent). It sees the index plus the effects
 * of the operations earlier in the same group-commit batch (`BatchView`), and those of the batch
 * still being written before it (its `parent` view, until that batch is in the index), so batches
 * decide exactly as if their operations had been committed one by one.
 *
 * Per-location limits (./limit-rules.ts) are decided here too, so they hold in the same commit as
 * the write: a refused write stages nothing; a stream with `discard: "old"` gets an `sdelall` of
 * its oldest messages right after the write that put it over (`Prepared.follow`). To decide that
 * exactly, the view keeps each touched location's message/key count and value bytes (`Usage`)
 * and, per stream, the seqs the batch set (with their sizes) or deleted.
 */
import { StrataError } from "./errors.js";
import { kvEntry, msgIdHit } from "./index/index-reads.js";
import { locationEnd } from "./index/codecs.js";
import type { LmdbIndex } from "./index/lmdb-index.js";
import { limitsOf } from "./index/location-conf.js";
import { boundsUsage, checkConfigChange, checkGrowth, checkValueSize, deniesDelete, deniesOverwrite, excessOf, type Usage } from "./limit-rules.js";
import type { LogRecord } from "./log/record.js";
import { seqMax, type Limits } from "./limits.js";
import type { Kind, LocationLimits } from "./types.js";
import type { Prepared, ValueParts, WriteOp } from "./write-op.js";

export type { Prepared, WriteOp } from "./write-op.js";
export { opBytes } from "./write-op.js";


interface MetaView {
  kind?: Kind;
  rev: number;
  lastSeq: number;
  id?: number;
  /** Messages (or keys) and value bytes, as the index will count them; `undefined`: not known (see `usage`). */
  count?: number;
  bytes?: number;
}

interface KvState {
  rev: number;
  expiresAt: number;
  size: number;
}

/** A stream seq as this batch left it: present with its value size, or deleted (false). */
type SeqState = number | false;

export class BatchView {
  private readonly metas = new Map<string, MetaView>();
  /** Per stream: the seqs this batch set (value size) or deleted. */
  private readonly seqs = new Map<string, Map<number, SeqState>>();
  /** Configurations this batch set or read (null: none). */
  private readonly confs = new Map<string, LocationLimits | null>();
  private readonly deletedUpTo = new Map<string, number>();
  private readonly kv = new Map<string, KvState | null>();
  private readonly dedup = new Map<string, unknown>();
  /** Locations this batch imports: every other write to them waits until the import is in the index. */
  private readonly importing = new Set<string>();

  constructor(
    private readonly index: LmdbIndex,
    private readonly limits: Limits,
    readonly now: number,
    /** The batch being written before this one, whose effects are not in the index yet. */
    private parent?: BatchView,
  ) {}

  /** The parent batch is in the index now: look there instead. */
  detach(): void {
    this.parent = undefined;
  }

  // What this batch (then its parent) has decided, or undefined where they have not touched it.
  private overlayMeta(loc: string): MetaView | undefined {
    return this.metas.get(loc) ?? this.parent?.overlayMeta(loc);
  }

  private overlaySeq(loc: string, seq: number): SeqState | undefined {
    const own = this.seqs.get(loc)?.get(seq);
    if (own !== undefined) return own;
    if (seq <= (this.deletedUpTo.get(loc) ?? 0)) return false;
    return this.parent?.overlaySeq(loc, seq);
  }

  /** Every seq of `loc` this batch or its parent touched (not sorted, may repeat). */
  private overlaySeqKeys(loc: string, out: number[] = []): number[] {
    for (const seq of this.seqs.get(loc)?.keys() ?? []) out.push(seq);
    this.parent?.overlaySeqKeys(loc, out);
    return out;
  }

  private overlayConf(loc: string): LocationLimits | null | undefined {
    const own = this.confs.get(loc);
    return own !== undefined ? own : this.parent?.overlayConf(loc);
  }

  private overlayKv(dk: string): KvState | null | undefined {
    const own = this.kv.get(dk);
    return own !== undefined ? own : this.parent?.overlayKv(dk);
  }

  private overlayImporting(loc: string): boolean {
    return this.importing.has(loc) || (this.parent?.overlayImporting(loc) ?? false);
  }

  private overlayDedup(dk: string): unknown {
    return this.dedup.get(dk) ?? this.parent?.overlayDedup(dk);
  }

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

  private meta(loc: string, kind: Kind): MetaView {
    if (this.overlayImporting(loc)) throw new StrataError("UNAVAILABLE", `location "${loc}" is being taken over; retry`);
    let m = this.metas.get(loc);
    if (m === undefined) {
      const before = this.parent?.overlayMeta(loc);
      if (before !== undefined) {
        m = { kind: before.kind, rev: before.rev, lastSeq: before.lastSeq, id: before.id, count: before.count, bytes: before.bytes };
        // Created by a batch that is in the index by now: entries written there are found by id.
        if (m.id === undefined) m.id = this.index.meta(loc)?.id;
      } else {
        const stored = this.index.meta(loc);
        m = stored
          ? { kind: stored.kind, rev: stored.rev, lastSeq: stored.lastSeq, id: stored.id, count: stored.count, bytes: stored.bytes }
          : { rev: 0, lastSeq: 0, count: 0, bytes: 0 };
      }
      this.metas.set(loc, m);
    }
    if (m.kind !== undefined && m.kind !== kind) {
      throw new StrataError("WRONG_KIND", `location "${loc}" is a ${m.kind}, not a ${kind}; a location's kind is fixed by its first write`);
    }
    return m;
  }

  private bump(m: MetaView, kind: Kind): number {
    // Checked before anything of the write is staged: a refused write changes nothing.
    if (m.rev >= seqMax) {
      throw new StrataError("TOO_LARGE", `location has reached the largest revision (${m.rev}, seqMax ${seqMax}); write to a new location`);
    }
    m.kind = kind;
    m.rev += 1;
    return m.rev;
  }

  /** The location's limits as of this point of the batch (undefined: none). */
  private limitsFor(loc: string, m: MetaView): LocationLimits | undefined {
    let c = this.overlayConf(loc);
    if (c === undefined) {
      c = limitsOf(this.index, m.id) ?? null;
      this.confs.set(loc, c);
    }
    return c ?? undefined;
  }

  /**
   * The location's message count and value bytes as of this point of the batch. Known from the
   * index and every write since, except after a deleteAll of a stream without count limits (not
   * worth a scan then): recounted here from the index and the overlay, once.
   */
  private usage(loc: string, m: MetaView): Usage {
    if (m.count === undefined || m.bytes === undefined) {
      const u = { count: 0, bytes: 0 };
      this.walkSeqs(loc, m, (_seq, size) => {
        u.count += 1;
        u.bytes += size;
        return true;
      });
      m.count = u.count;
      m.bytes = u.bytes;
    }
    return { count: m.count, bytes: m.bytes! };
  }

  /**
   * Visits the messages the stream holds as of this point of the batch, in seq order, up to
   * `maxSeq`, until `visit` returns false: the index's entries merged with the batch overlay.
   */
  private walkSeqs(loc: string, m: MetaView, visit: (seq: number, size: number) => boolean, maxSeq = Number.MAX_SAFE_INTEGER): void {
    const touched = [...new Set(this.overlaySeqKeys(loc))].filter((s) => s <= maxSeq).sort((a, b) => a - b);
    let t = 0;
    const overlay = (seq: number): boolean => {
      const state = this.overlaySeq(loc, seq);
      return state === false || typeof state !== "number" ? true : visit(seq, state);
    };
    if (m.id !== undefined) {
      const end: [number, number] = maxSeq < Number.MAX_SAFE_INTEGER ? [m.id, maxSeq + 1] : locationEnd(m.id);
      for (const { key, value } of this.index.seqs.getRange({ start: [m.id, 0], end })) {
        const seq = key[1] as number;
        for (; t < touched.length && touched[t]! < seq; t++) if (!overlay(touched[t]!)) return;
        if (t < touched.length && touched[t] === seq) {
          t++;
          if (!overlay(seq)) return;
          continue;
        }
        const state = this.overlaySeq(loc, seq);
        if (state === false) continue;
        if (!visit(seq, typeof state === "number" ? state : value[3])) return;
      }
    }
    for (; t < touched.length; t++) if (!overlay(touched[t]!)) return;
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

  private seqMap(loc: string): Map<number, SeqState> {
    let map = this.seqs.get(loc);
    if (!map) this.seqs.set(loc, (map = new Map()));
    return map;
  }

  /** The value size of `seq` if the stream holds it at this point of the batch. */
  private seqSize(loc: string, m: MetaView, seq: number): number | undefined {
    const overlay = this.overlaySeq(loc, seq);
    if (overlay !== undefined) return overlay === false ? undefined : overlay;
    return m.id === undefined ? undefined : this.index.seqs.get([m.id, seq])?.[3];
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

  /** Stages and returns the sdelall of every message up to `endSeq` (usage left to the caller). */
  private deleteUpTo(loc: string, m: MetaView, endSeq: number): LogRecord {
    const rev = this.bump(m, "stream");
    const own = this.seqs.get(loc);
    if (own) for (const seq of own.keys()) if (seq <= endSeq) own.set(seq, false);
    this.deletedUpTo.set(loc, Math.max(endSeq, this.deletedUpTo.get(loc) ?? 0));
    return { t: "sdelall", loc, endSeq, rev, ts: this.now };
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

  private kvState(loc: string, m: MetaView, key: string): KvState | null {
    const overlay = this.overlayKv(`${loc}\0${key}`);
    if (overlay !== undefined) return overlay;
    if (m.id === undefined) return null;
    const e = kvEntry(this.index, m.id, key);
    return e ? { rev: e.rev, expiresAt: e.expiresAt, size: e.size } : null;
  }

  private live(s: KvState | null): s is KvState {
    return s !== null && (s.expiresAt === 0 || s.expiresAt > this.now);
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

/**
 * Write operations and how each one is decided against the current state.
 *
 * `prepare` turns a validated operation into the log record that will carry it (assigning seq,
 * revision and timestamp) or into an error (CONFLICT, WRONG_KIND) or into a result that needs
 * no record (a duplicate msgId, a delete of something absent). It sees the index plus the effects
 * of the operations earlier in the same group-commit batch (`BatchView`), and those of the batch
 * still being written before it (its `parent` view, until that batch is in the index), so batches
 * decide exactly as if their operations had been committed one by one.
 */
import { StrataError } from "./errors.js";
import { kvEntry, msgIdHit } from "./index/index-reads.js";
import type { LmdbIndex } from "./index/lmdb-index.js";
import type { ImportRecord, LogRecord, Pointer } from "./log/record.js";
import { seqMax, type Limits } from "./limits.js";
import type { Headers, Kind } from "./types.js";

interface ValueParts {
  value: Uint8Array;
  headers?: Headers;
  /** Set when the value was written ahead as chunk records. */
  chunks?: Pointer[];
  size: number;
}

export type WriteOp =
  | ({ op: "append"; loc: string; timestamp?: number; msgId?: string; expectedLastSeq?: number } & ValueParts)
  | ({ op: "sset"; loc: string; seq: number; timestamp?: number } & ValueParts)
  | { op: "sdel"; loc: string; seq: number }
  | { op: "sdelall"; loc: string; endSeq?: number }
  | ({ op: "kset"; loc: string; key: string; ttlMs?: number; expectedRevision?: number } & ValueParts)
  | { op: "kdel"; loc: string; key: string }
  | { op: "kexpire"; loc: string; key: string; rev: number }
  | { op: "chunk"; data: Uint8Array }
  /** A takeover's import record, its rows prepared beforehand (tier/takeover.ts, index/import-rows.ts). */
  | { op: "import"; record: ImportRecord };

/** What `prepare` decided: a record to write, or a final result with nothing to write. */
export type Prepared = { record: LogRecord } | { result: unknown };

interface MetaView {
  kind?: Kind;
  rev: number;
  lastSeq: number;
  id?: number;
}

interface KvState {
  rev: number;
  expiresAt: number;
}

export function opBytes(op: WriteOp): number {
  switch (op.op) {
    case "append":
    case "sset":
    case "kset":
      return op.chunks ? 256 : op.value.byteLength + 256;
    case "chunk":
      return op.data.byteLength + 64;
    default:
      return 128;
  }
}

export class BatchView {
  private readonly metas = new Map<string, MetaView>();
  private readonly seqs = new Map<string, boolean>();
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

  private overlaySeq(loc: string, seq: number): boolean | undefined {
    const own = this.seqs.get(`${loc}\0${seq}`);
    if (own !== undefined) return own;
    if (seq <= (this.deletedUpTo.get(loc) ?? 0)) return false;
    return this.parent?.overlaySeq(loc, seq);
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
      case "sset":
        return this.streamSet(op, op.seq, op.timestamp);
      case "sdel":
        return this.streamDelete(op);
      case "sdelall":
        return this.streamDeleteAll(op);
      case "kset":
        return this.kvSet(op);
      case "kdel":
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
        m = { kind: before.kind, rev: before.rev, lastSeq: before.lastSeq, id: before.id };
        // Created by a batch that is in the index by now: entries written there are found by id.
        if (m.id === undefined) m.id = this.index.meta(loc)?.id;
      } else {
        const stored = this.index.meta(loc);
        m = stored ? { kind: stored.kind, rev: stored.rev, lastSeq: stored.lastSeq, id: stored.id } : { rev: 0, lastSeq: 0 };
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

  private append(op: Extract<WriteOp, { op: "append" }>): Prepared {
    const m = this.meta(op.loc, "stream");
    if (op.msgId !== undefined) {
      const dk = `${op.loc}\0${op.msgId}`;
      const seen = this.overlayDedup(dk) ?? this.storedDedup(m, op.msgId);
      if (seen !== undefined) return { result: seen };
    }
    if (m.lastSeq >= seqMax) {
      throw new StrataError("TOO_LARGE", `stream "${op.loc}" is at seq ${m.lastSeq}, and seqMax is ${seqMax}; append is impossible, use set() with a smaller seq or a new stream`);
    }
    if (op.expectedLastSeq !== undefined && op.expectedLastSeq !== m.lastSeq) {
      throw new StrataError("CONFLICT", `expectedLastSeq is ${op.expectedLastSeq} but the stream "${op.loc}" is at ${m.lastSeq}; re-read and retry`);
    }
    const prepared = this.streamSet(op, m.lastSeq + 1, op.timestamp);
    if (op.msgId !== undefined && "record" in prepared && prepared.record.t === "sset") {
      const r = prepared.record;
      this.dedup.set(`${op.loc}\0${op.msgId}`, { seq: r.seq, revision: r.rev, timestamp: r.ts, duplicate: true });
    }
    return prepared;
  }

  private storedDedup(m: MetaView, msgId: string): unknown {
    if (m.id === undefined) return undefined;
    const hit = msgIdHit(this.index, m.id, msgId);
    if (!hit || this.now - hit.at > this.limits.dedupWindowMs) return undefined;
    return { seq: hit.seq, revision: hit.rev, timestamp: hit.ts, duplicate: true };
  }

  private streamSet(op: { loc: string; msgId?: string } & ValueParts, seq: number, timestamp: number | undefined): Prepared {
    const m = this.meta(op.loc, "stream");
    const rev = this.bump(m, "stream");
    if (seq > m.lastSeq) m.lastSeq = seq;
    this.seqs.set(`${op.loc}\0${seq}`, true);
    const record: LogRecord = { t: "sset", loc: op.loc, seq, rev, ts: timestamp ?? this.now, value: op.value, size: op.size };
    if (op.headers) record.headers = op.headers;
    if (op.msgId !== undefined) {
      record.msgId = op.msgId;
      record.at = this.now;
    }
    if (op.chunks) record.chunks = op.chunks;
    return { record };
  }

  private seqExists(loc: string, m: MetaView, seq: number): boolean {
    const overlay = this.overlaySeq(loc, seq);
    if (overlay !== undefined) return overlay;
    return m.id !== undefined && this.index.seqs.get([m.id, seq]) !== undefined;
  }

  private streamDelete(op: { loc: string; seq: number }): Prepared {
    const m = this.meta(op.loc, "stream");
    if (!this.seqExists(op.loc, m, op.seq)) return { result: { deleted: false, revision: m.rev } };
    const rev = this.bump(m, "stream");
    this.seqs.set(`${op.loc}\0${op.seq}`, false);
    return { record: { t: "sdel", loc: op.loc, seq: op.seq, rev, ts: this.now } };
  }

  private streamDeleteAll(op: { loc: string; endSeq?: number }): Prepared {
    const m = this.meta(op.loc, "stream");
    const endSeq = Math.min(op.endSeq ?? m.lastSeq, m.lastSeq);
    if (m.kind === undefined || endSeq < 1) return { result: { count: 0, revision: m.rev } };
    const rev = this.bump(m, "stream");
    for (const key of this.seqs.keys()) {
      const [loc, seq] = key.split("\0");
      if (loc === op.loc && Number(seq) <= endSeq) this.seqs.set(key, false);
    }
    this.deletedUpTo.set(op.loc, Math.max(endSeq, this.deletedUpTo.get(op.loc) ?? 0));
    return { record: { t: "sdelall", loc: op.loc, endSeq, rev, ts: this.now } };
  }

  private kvState(loc: string, m: MetaView, key: string): KvState | null {
    const overlay = this.overlayKv(`${loc}\0${key}`);
    if (overlay !== undefined) return overlay;
    if (m.id === undefined) return null;
    const e = kvEntry(this.index, m.id, key);
    return e ? { rev: e.rev, expiresAt: e.expiresAt } : null;
  }

  private live(s: KvState | null): s is KvState {
    return s !== null && (s.expiresAt === 0 || s.expiresAt > this.now);
  }

  private kvSet(op: Extract<WriteOp, { op: "kset" }>): Prepared {
    const m = this.meta(op.loc, "kv");
    if (op.expectedRevision !== undefined) {
      const current = this.kvState(op.loc, m, op.key);
      const have = this.live(current) ? current.rev : 0;
      if (have !== op.expectedRevision) {
        throw new StrataError(
          "CONFLICT",
          `expectedRevision is ${op.expectedRevision} but key "${op.key}" is at revision ${have}${have === 0 ? " (absent)" : ""}; re-read and retry`,
        );
      }
    }
    const rev = this.bump(m, "kv");
    const expiresAt = op.ttlMs !== undefined ? this.now + op.ttlMs : undefined;
    this.kv.set(`${op.loc}\0${op.key}`, { rev, expiresAt: expiresAt ?? 0 });
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
    this.kv.set(`${op.loc}\0${op.key}`, null);
    const record: LogRecord = { t: "kdel", loc: op.loc, key: op.key, rev, ts: this.now };
    if (op.op === "kexpire") record.expired = true;
    return { record };
  }
}

/**
 * What a group-commit batch sees of the state it decides writes against (./write-ops.ts decides
 * them): the index, plus the effects of the operations earlier in the same batch, plus those of
 * the batch still being written before it (its `parent` view, until that batch is in the index:
 * `detach`). Reads here look at this batch's overlay first, then the parent's, then the index, so
 * batches decide exactly as if their operations had been committed one by one.
 *
 * Invariants it keeps:
 * - The overlay holds, per touched location, its kind, revision and last seq (`MetaView`), its
 *   message/key count and value bytes as the index will count them (`Usage`; `undefined` after a
 *   deleteAll of a stream without count limits, recounted once when next needed), its
 *   configuration, and per stream the seqs the batch set (with their sizes) or deleted, per kv key
 *   its revision, expiry and size, per msgId its first answer.
 * - A revision is bumped only after everything of the write was checked (`bump` refuses at seqMax
 *   before anything is staged): a refused write changes nothing.
 * - A location being imported in this batch (or its parent) refuses every other write with
 *   UNAVAILABLE until the import is in the index.
 */
import { StrataError } from "./errors.js";
import { kvEntry } from "./index/index-reads.js";
import { locationEnd } from "./index/codecs.js";
import type { LmdbIndex } from "./index/lmdb-index.js";
import { limitsOf } from "./index/location-conf.js";
import type { Usage } from "./limit-rules.js";
import type { LogRecord } from "./log/record.js";
import { seqMax, type Limits } from "./limits.js";
import type { Kind, LocationLimits } from "./types.js";

export interface MetaView {
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

export class BatchState {
  private readonly metas = new Map<string, MetaView>();
  /** Per stream: the seqs this batch set (value size) or deleted. */
  private readonly seqs = new Map<string, Map<number, SeqState>>();
  /** Configurations this batch set or read (null: none). */
  protected readonly confs = new Map<string, LocationLimits | null>();
  private readonly deletedUpTo = new Map<string, number>();
  protected readonly kv = new Map<string, KvState | null>();
  protected readonly dedup = new Map<string, unknown>();
  /** Locations this batch imports: every other write to them waits until the import is in the index. */
  protected readonly importing = new Set<string>();

  constructor(
    protected readonly index: LmdbIndex,
    protected readonly limits: Limits,
    readonly now: number,
    /** The batch being written before this one, whose effects are not in the index yet. */
    private parent?: BatchState,
  ) {}

  /** The parent batch is in the index now: look there instead. */
  detach(): void {
    this.parent = undefined;
  }

  // What this batch (then its parent) has decided, or undefined where they have not touched it.
  private overlayMeta(loc: string): MetaView | undefined {
    return this.metas.get(loc) ?? this.parent?.overlayMeta(loc);
  }

  protected overlaySeq(loc: string, seq: number): SeqState | undefined {
    const own = this.seqs.get(loc)?.get(seq);
    if (own !== undefined) return own;
    if (seq <= (this.deletedUpTo.get(loc) ?? 0)) return false;
    return this.parent?.overlaySeq(loc, seq);
  }

  /** Every seq of `loc` this batch or its parent touched (not sorted, may repeat). */
  protected overlaySeqKeys(loc: string, out: number[] = []): number[] {
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

  protected overlayDedup(dk: string): unknown {
    return this.dedup.get(dk) ?? this.parent?.overlayDedup(dk);
  }

  protected meta(loc: string, kind: Kind): MetaView {
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

  protected bump(m: MetaView, kind: Kind): number {
    // Checked before anything of the write is staged: a refused write changes nothing.
    if (m.rev >= seqMax) {
      throw new StrataError("TOO_LARGE", `location has reached the largest revision (${m.rev}, seqMax ${seqMax}); write to a new location`);
    }
    m.kind = kind;
    m.rev += 1;
    return m.rev;
  }

  /** The location's limits as of this point of the batch (undefined: none). */
  protected limitsFor(loc: string, m: MetaView): LocationLimits | undefined {
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
  protected usage(loc: string, m: MetaView): Usage {
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
  protected walkSeqs(loc: string, m: MetaView, visit: (seq: number, size: number) => boolean, maxSeq = Number.MAX_SAFE_INTEGER): void {
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

  protected seqMap(loc: string): Map<number, SeqState> {
    let map = this.seqs.get(loc);
    if (!map) this.seqs.set(loc, (map = new Map()));
    return map;
  }

  /** The value size of `seq` if the stream holds it at this point of the batch. */
  protected seqSize(loc: string, m: MetaView, seq: number): number | undefined {
    const overlay = this.overlaySeq(loc, seq);
    if (overlay !== undefined) return overlay === false ? undefined : overlay;
    return m.id === undefined ? undefined : this.index.seqs.get([m.id, seq])?.[3];
  }

  /** Stages and returns the sdelall of every message up to `endSeq` (usage left to the caller). */
  protected deleteUpTo(loc: string, m: MetaView, endSeq: number): LogRecord {
    const rev = this.bump(m, "stream");
    const own = this.seqs.get(loc);
    if (own) for (const seq of own.keys()) if (seq <= endSeq) own.set(seq, false);
    this.deletedUpTo.set(loc, Math.max(endSeq, this.deletedUpTo.get(loc) ?? 0));
    return { t: "sdelall", loc, endSeq, rev, ts: this.now };
  }

  protected kvState(loc: string, m: MetaView, key: string): KvState | null {
    const overlay = this.overlayKv(`${loc}\0${key}`);
    if (overlay !== undefined) return overlay;
    if (m.id === undefined) return null;
    const e = kvEntry(this.index, m.id, key);
    return e ? { rev: e.rev, expiresAt: e.expiresAt, size: e.size } : null;
  }

  protected live(s: KvState | null): s is KvState {
    return s !== null && (s.expiresAt === 0 || s.expiresAt > this.now);
  }
}

/**
 * A plain in-memory model of a Store's observable behaviour, for the model-based property test.
 * It decides every operation the way DESIGN.md says a store must, independently of the engine's
 * code: the test applies the same operations to both and compares what is readable after each.
 */

export interface ModelMessage {
  value: Uint8Array;
  headers?: Record<string, string>;
  timestamp: number;
  /** The location revision of the write that stored it (which log record holds it). */
  revision: number;
}

export interface ModelKvEntry {
  value: Uint8Array;
  revision: number;
  timestamp: number;
  expiresAt?: number;
}

export interface ModelLocation {
  kind: "stream" | "kv";
  /** Order of first commit; the store sweeps expired keys by (expiresAt, this, key). */
  order: number;
  rev: number;
  lastSeq: number;
  msgs: Map<number, ModelMessage>;
  kv: Map<string, ModelKvEntry>;
  dedup: Map<string, { seq: number; rev: number; ts: number }>;
  /** Every committed revision's change, by revision. */
  changes: Map<number, ModelChange>;
}

export type Outcome = { ok: true; result: unknown } | { ok: false; code: string };

/**
 * What one revision of a location changed, as the change feed reports it. Compaction may drop
 * the record of a set that was overwritten or deleted since (docs/compaction.md), so a feed read
 * after a compaction holds a subset of the revisions: see `requiredRevisions`.
 */
export type ModelChange =
  | { op: "set"; seq: number }
  | { op: "set"; key: string }
  | { op: "delete"; seq: number }
  | { op: "deleteAll" }
  | { op: "delete" | "expire"; key: string };

export class Model {
  readonly locs = new Map<string, ModelLocation>();
  private created = 0;

  constructor(
    private readonly dedupWindowMs: number,
    public now: number,
  ) {}

  /** An independent copy (values are never mutated, so they are shared). */
  clone(): Model {
    const m = new Model(this.dedupWindowMs, this.now);
    m.created = this.created;
    for (const [name, l] of this.locs) {
      m.locs.set(name, { ...l, msgs: new Map(l.msgs), kv: new Map(l.kv), dedup: new Map(l.dedup), changes: new Map(l.changes) });
    }
    return m;
  }

  private loc(name: string, kind: "stream" | "kv"): ModelLocation | Outcome {
    const l = this.locs.get(name);
    if (l && l.kind !== kind) return { ok: false, code: "WRONG_KIND" };
    return l ?? { kind, order: 0, rev: 0, lastSeq: 0, msgs: new Map(), kv: new Map(), dedup: new Map(), changes: new Map() };
  }

  private commit(name: string, l: ModelLocation, change: ModelChange): number {
    if (!this.locs.has(name)) {
      l.order = ++this.created;
      this.locs.set(name, l);
    }
    l.rev += 1;
    l.changes.set(l.rev, change);
    return l.rev;
  }

  /**
   * The revisions a location's change feed must still hold after any compaction: every live
   * message's and key's (an expired key the sweep has not removed yet is still live) and every
   * tombstone's (deletes, deleteAlls and expiries are never dropped). Any other revision of
   * 1..rev may be missing.
   */
  requiredRevisions(name: string): Set<number> {
    const l = this.locs.get(name);
    const out = new Set<number>();
    if (!l) return out;
    for (const m of l.msgs.values()) out.add(m.revision);
    for (const e of l.kv.values()) out.add(e.revision);
    for (const [rev, c] of l.changes) if (c.op !== "set") out.add(rev);
    return out;
  }

  append(name: string, value: Uint8Array, opts: { msgId?: string; expectedLastSeq?: number }): Outcome {
    const l = this.loc(name, "stream");
    if ("ok" in l) return l;
    if (opts.msgId !== undefined) {
      const seen = l.dedup.get(opts.msgId);
      if (seen && this.now - seen.ts <= this.dedupWindowMs) return { ok: true, result: { seq: seen.seq, revision: seen.rev, timestamp: seen.ts, duplicate: true } };
    }
    if (opts.expectedLastSeq !== undefined && opts.expectedLastSeq !== l.lastSeq) return { ok: false, code: "CONFLICT" };
    const seq = l.lastSeq + 1;
    const rev = this.commit(name, l, { op: "set", seq });
    l.lastSeq = seq;
    l.msgs.set(seq, { value, timestamp: this.now, revision: rev });
    if (opts.msgId !== undefined) l.dedup.set(opts.msgId, { seq, rev, ts: this.now });
    return { ok: true, result: { seq, revision: rev, timestamp: this.now } };
  }

  set(name: string, seq: number, value: Uint8Array): Outcome {
    const l = this.loc(name, "stream");
    if ("ok" in l) return l;
    const rev = this.commit(name, l, { op: "set", seq });
    if (seq > l.lastSeq) l.lastSeq = seq;
    l.msgs.set(seq, { value, timestamp: this.now, revision: rev });
    return { ok: true, result: { seq, revision: rev, timestamp: this.now } };
  }

  delete(name: string, seq: number): Outcome {
    const l = this.loc(name, "stream");
    if ("ok" in l) return l;
    if (!l.msgs.has(seq)) return { ok: true, result: { deleted: false, revision: l.rev } };
    l.msgs.delete(seq);
    return { ok: true, result: { deleted: true, revision: this.commit(name, l, { op: "delete", seq }) } };
  }

  deleteAll(name: string, endSeq: number | undefined): Outcome {
    const l = this.loc(name, "stream");
    if ("ok" in l) return l;
    const end = Math.min(endSeq ?? l.lastSeq, l.lastSeq);
    if (endSeq === 0 || !this.locs.has(name) || end < 1) return { ok: true, result: { count: 0, revision: l.rev } };
    let count = 0;
    for (const seq of [...l.msgs.keys()]) {
      if (seq <= end) {
        l.msgs.delete(seq);
        count++;
      }
    }
    return { ok: true, result: { count, revision: this.commit(name, l, { op: "deleteAll" }) } };
  }

  private live(e: ModelKvEntry | undefined): e is ModelKvEntry {
    return e !== undefined && (e.expiresAt === undefined || e.expiresAt > this.now);
  }

  kvSet(name: string, key: string, value: Uint8Array, opts: { ttlMs?: number; expectedRevision?: number }): Outcome {
    const l = this.loc(name, "kv");
    if ("ok" in l) return l;
    if (opts.expectedRevision !== undefined) {
      const e = l.kv.get(key);
      const have = this.live(e) ? e.revision : 0;
      if (have !== opts.expectedRevision) return { ok: false, code: "CONFLICT" };
    }
    const rev = this.commit(name, l, { op: "set", key });
    const entry: ModelKvEntry = { value, revision: rev, timestamp: this.now };
    if (opts.ttlMs !== undefined) entry.expiresAt = this.now + opts.ttlMs;
    l.kv.set(key, entry);
    return { ok: true, result: { revision: rev, timestamp: this.now } };
  }

  kvDelete(name: string, key: string): Outcome {
    const l = this.loc(name, "kv");
    if ("ok" in l) return l;
    if (!this.live(l.kv.get(key))) return { ok: true, result: { deleted: false, revision: l.rev } };
    l.kv.delete(key);
    return { ok: true, result: { deleted: true, revision: this.commit(name, l, { op: "delete", key }) } };
  }

  /** What `Store.sweep()` must do: expire every due key in (expiresAt, location order, key) order. */
  sweep(): number {
    const due: Array<{ at: number; order: number; key: string; name: string; l: ModelLocation }> = [];
    for (const [name, l] of this.locs) {
      for (const [key, e] of l.kv) {
        if (e.expiresAt !== undefined && e.expiresAt <= this.now) due.push({ at: e.expiresAt, order: l.order, key, name, l });
      }
    }
    due.sort((a, b) => a.at - b.at || a.order - b.order || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    for (const d of due) {
      d.l.kv.delete(d.key);
      this.commit(d.name, d.l, { op: "expire", key: d.key });
    }
    return due.length;
  }

  /** Live kv entries of a location, in key order. */
  liveKv(name: string): Array<[string, ModelKvEntry]> {
    const l = this.locs.get(name);
    if (!l || l.kind !== "kv") return [];
    return [...l.kv.entries()].filter(([, e]) => this.live(e)).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }
}

/**
 * What is wrong with a location's change feed `got` (`changesSince(loc, 0, all)`), as messages;
 * empty when nothing is. Without a compaction the feed holds exactly the revisions 1..rev; after
 * one it may lack revisions whose records compaction dropped, but never one `requiredRevisions`
 * names. Every change it does hold is, in revision order, the one the model committed.
 */
export function feedProblems(model: Model, loc: string, got: ReadonlyArray<{ revision: number; op: string; seq?: number; key?: string }>, compacted: boolean): string[] {
  const l = model.locs.get(loc);
  const problems: string[] = [];
  const revs = got.map((c) => c.revision);
  if (!compacted) {
    const want = Array.from({ length: l?.rev ?? 0 }, (_, i) => i + 1);
    if (JSON.stringify(revs) !== JSON.stringify(want)) problems.push(`${loc}: feed revisions ${JSON.stringify(revs)}, want 1..${l?.rev ?? 0}`);
  }
  for (let i = 1; i < revs.length; i++) if (revs[i]! <= revs[i - 1]!) problems.push(`${loc}: feed out of order at ${i}: ${revs[i - 1]} then ${revs[i]}`);
  for (const c of got) {
    const m = l?.changes.get(c.revision);
    if (!m) {
      problems.push(`${loc}: feed has revision ${c.revision}, which the model never committed`);
      continue;
    }
    const sameOp = m.op === c.op;
    const sameTarget = "seq" in m ? c.seq === m.seq : "key" in m ? c.key === m.key : true;
    if (!sameOp || !sameTarget) problems.push(`${loc}: revision ${c.revision} is ${JSON.stringify({ op: c.op, seq: c.seq, key: c.key })}, the model committed ${JSON.stringify(m)}`);
  }
  const have = new Set(revs);
  for (const rev of model.requiredRevisions(loc)) if (!have.has(rev)) problems.push(`${loc}: feed lacks revision ${rev} (${JSON.stringify(l?.changes.get(rev))}), which is live or a tombstone`);
  return problems;
}

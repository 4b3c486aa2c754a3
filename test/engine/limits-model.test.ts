/**
 * Property test of per-location limits (docs/compaction.md, "Per-location limits"): after any
 * sequence of appends, sets, deletes, batches of concurrent writes, limit changes, clock ticks,
 * sweeps, reopens and forced reindexes, a stream and a kv hold exactly what a plain model says;
 * every refusal has the model's code (LIMIT, FORBIDDEN) and writes nothing; and a watcher that
 * applies `store.onChange` to its own copy holds what the store holds.
 *
 * The model is written from the rules in src/limit-rules.ts's header, not from the engine's code.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { Store } from "../../src/store.js";
import type { Change, LocationLimits } from "../../src/types.js";
import { all } from "../helpers/collect.js";

const LIMITS = { segmentBytesMax: 64 * 1024, recordBytesMax: 24 * 1024, chunkBytes: 16 * 1024, headersBytesMax: 4 * 1024, scanPageSize: 3, dedupWindowMs: 1000 };
const T0 = 1_700_000_000_000;
const S = "m/s";
const K = "m/k";

type Op =
  | { t: "append"; size: number; old: boolean }
  | { t: "set"; seq: number; size: number }
  | { t: "del"; seq: number }
  | { t: "delAll"; endSeq?: number }
  | { t: "kset"; key: string; size: number; ttl?: number }
  | { t: "kdel"; key: string }
  | { t: "batch"; ops: Op[] }
  | { t: "sconf"; limits: LocationLimits }
  | { t: "kconf"; limits: LocationLimits }
  | { t: "tick"; ms: number }
  | { t: "sweep" }
  | { t: "reopen"; reindex: boolean };

const opt = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: undefined });
const strip = <T extends object>(r: T): T => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined)) as T;
const streamLimits = fc
  .record({
    maxMsgs: opt(fc.integer({ min: 1, max: 6 })),
    maxBytes: opt(fc.integer({ min: 10, max: 60 })),
    maxMsgBytes: opt(fc.integer({ min: 1, max: 10 })),
    maxAgeMs: opt(fc.integer({ min: 50, max: 400 })),
    discard: opt(fc.constantFrom("old" as const, "new" as const)),
    denyDelete: opt(fc.boolean()),
  })
  .map(strip);
const kvLimits = fc
  .record({
    maxMsgs: opt(fc.integer({ min: 1, max: 4 })),
    maxBytes: opt(fc.integer({ min: 10, max: 40 })),
    maxMsgBytes: opt(fc.integer({ min: 1, max: 10 })),
    discard: opt(fc.constant("new" as const)),
    denyDelete: opt(fc.boolean()),
    ttlMs: opt(fc.integer({ min: 50, max: 400 })),
  })
  .map(strip);
const key = fc.constantFrom("a", "b", "c", "d", "e");
const write: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ t: fc.constant("append" as const), size: fc.integer({ min: 0, max: 12 }), old: fc.boolean() }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("set" as const), seq: fc.integer({ min: 1, max: 14 }), size: fc.integer({ min: 0, max: 12 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("del" as const), seq: fc.integer({ min: 1, max: 14 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("delAll" as const), endSeq: opt(fc.integer({ min: 0, max: 14 })) }).map(strip) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant("kset" as const), key, size: fc.integer({ min: 0, max: 12 }), ttl: opt(fc.integer({ min: 50, max: 300 })) }).map(strip) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("kdel" as const), key }) },
);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 10, arbitrary: write },
  { weight: 3, arbitrary: fc.array(write, { minLength: 2, maxLength: 6 }).map((ops) => ({ t: "batch" as const, ops })) },
  { weight: 2, arbitrary: streamLimits.map((limits) => ({ t: "sconf" as const, limits })) },
  { weight: 2, arbitrary: kvLimits.map((limits) => ({ t: "kconf" as const, limits })) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant("tick" as const), ms: fc.integer({ min: 1, max: 300 }) }) },
  { weight: 2, arbitrary: fc.constant({ t: "sweep" as const }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("reopen" as const), reindex: fc.boolean() }) },
);

/** As `config` stores it: `denyDelete: false` is the same as leaving it out. */
const normalised = (l: LocationLimits): LocationLimits => strip({ ...l, denyDelete: l.denyDelete ? true : undefined });

/** The plain model of one stream and one kv under their limits. */
class Model {
  now = T0;
  msgs = new Map<number, { size: number; ts: number }>();
  lastSeq = 0;
  sl: LocationLimits = {};
  kv = new Map<string, { size: number; expiresAt: number }>();
  kl: LocationLimits = {};

  private valueCheck(l: LocationLimits, size: number): string | undefined {
    if (l.maxMsgBytes !== undefined && size > l.maxMsgBytes) return "LIMIT";
    if (l.maxBytes !== undefined && size > l.maxBytes) return "LIMIT";
    return undefined;
  }

  private refuses(l: LocationLimits, kind: "stream" | "kv", before: { count: number; bytes: number }, after: { count: number; bytes: number }): boolean {
    const old = kind === "stream" && (l.discard ?? "old") === "old";
    if (old) return false;
    return (l.maxMsgs !== undefined && after.count > l.maxMsgs && after.count > before.count) || (l.maxBytes !== undefined && after.bytes > l.maxBytes && after.bytes > before.bytes);
  }

  private streamUsage() {
    let bytes = 0;
    for (const m of this.msgs.values()) bytes += m.size;
    return { count: this.msgs.size, bytes };
  }

  private kvUsage() {
    let bytes = 0;
    for (const e of this.kv.values()) bytes += e.size;
    return { count: this.kv.size, bytes };
  }

  /** discard "old": drop the lowest seqs until the stream fits. */
  private fit(): void {
    const l = this.sl;
    if ((l.discard ?? "old") !== "old") return;
    for (const seq of [...this.msgs.keys()].sort((a, b) => a - b)) {
      const u = this.streamUsage();
      if ((l.maxMsgs === undefined || u.count <= l.maxMsgs) && (l.maxBytes === undefined || u.bytes <= l.maxBytes)) return;
      this.msgs.delete(seq);
    }
  }

  streamWrite(seq: number, size: number, ts: number): string | undefined {
    const bad = this.valueCheck(this.sl, size);
    if (bad) return bad;
    const before = this.streamUsage();
    const old = this.msgs.get(seq);
    const after = { count: before.count + (old ? 0 : 1), bytes: before.bytes - (old?.size ?? 0) + size };
    if (this.refuses(this.sl, "stream", before, after)) return "LIMIT";
    this.msgs.set(seq, { size, ts });
    this.lastSeq = Math.max(this.lastSeq, seq);
    this.fit();
    return undefined;
  }

  apply(op: Op): string | undefined {
    switch (op.t) {
      case "append":
        return this.streamWrite(this.lastSeq + 1, op.size, op.old ? T0 - 10_000 : this.now);
      case "set":
        if (this.sl.denyDelete && this.msgs.has(op.seq)) return "FORBIDDEN";
        return this.streamWrite(op.seq, op.size, this.now);
      case "del":
        if (this.sl.denyDelete) return "FORBIDDEN";
        this.msgs.delete(op.seq);
        return undefined;
      case "delAll": {
        if (this.sl.denyDelete) return "FORBIDDEN";
        const end = Math.min(op.endSeq ?? this.lastSeq, this.lastSeq);
        for (const seq of [...this.msgs.keys()]) if (seq <= end) this.msgs.delete(seq);
        return undefined;
      }
      case "kset": {
        const bad = this.valueCheck(this.kl, op.size);
        if (bad) return bad;
        const before = this.kvUsage();
        const old = this.kv.get(op.key);
        const after = { count: before.count + (old ? 0 : 1), bytes: before.bytes - (old?.size ?? 0) + op.size };
        if (this.refuses(this.kl, "kv", before, after)) return "LIMIT";
        const ttl = op.ttl ?? this.kl.ttlMs;
        this.kv.set(op.key, { size: op.size, expiresAt: ttl === undefined ? 0 : this.now + ttl });
        return undefined;
      }
      case "kdel": {
        if (this.kl.denyDelete) return "FORBIDDEN";
        const e = this.kv.get(op.key);
        if (e && (e.expiresAt === 0 || e.expiresAt > this.now)) this.kv.delete(op.key);
        return undefined;
      }
      case "sconf": {
        const next = normalised(op.limits);
        if (stricter(this.sl, next, "stream")) return "FORBIDDEN";
        this.sl = next;
        this.fit();
        return undefined;
      }
      case "kconf": {
        const next = normalised(op.limits);
        if (stricter(this.kl, next, "kv")) return "FORBIDDEN";
        this.kl = next;
        return undefined;
      }
      case "tick":
        this.now += op.ms;
        return undefined;
      case "sweep": {
        for (const [k, e] of [...this.kv]) if (e.expiresAt !== 0 && e.expiresAt <= this.now) this.kv.delete(k);
        if (this.sl.maxAgeMs !== undefined) {
          for (const seq of [...this.msgs.keys()].sort((a, b) => a - b)) {
            if (this.msgs.get(seq)!.ts >= this.now - this.sl.maxAgeMs) break;
            this.msgs.delete(seq);
          }
        }
        return undefined;
      }
      default:
        return undefined;
    }
  }

  state() {
    const stream = [...this.msgs].sort((a, b) => a[0] - b[0]).map(([seq, m]) => [seq, m.size, m.ts]);
    const kv = [...this.kv].filter(([, e]) => e.expiresAt === 0 || e.expiresAt > this.now).sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([k, e]) => [k, e.size]);
    const su = this.streamUsage();
    const ku = this.kvUsage();
    return { stream, kv, s: [su.count, su.bytes], k: [ku.count, ku.bytes], sl: this.sl, kl: this.kl };
  }
}

/** denyDelete is sticky: kept, and no dropping limit added or lowered, no switch to discard "old". */
function stricter(old: LocationLimits, next: LocationLimits, kind: "stream" | "kv"): boolean {
  if (!old.denyDelete) return false;
  if (!next.denyDelete) return true;
  for (const f of ["maxMsgs", "maxBytes", "maxAgeMs"] as const) {
    const was = old[f];
    const now = next[f];
    if (now !== undefined && (was === undefined || now < was)) return true;
  }
  return kind === "stream" && (next.discard ?? "old") === "old" && (old.discard ?? "old") !== "old";
}

/** A watcher's copy, built only from store.onChange. */
class Watcher {
  msgs = new Map<number, number>();
  kv = new Map<string, number>();
  on(c: Change): void {
    if (c.kind === "stream") {
      if (c.op === "set") this.msgs.set(c.seq, c.size);
      else if (c.op === "delete") this.msgs.delete(c.seq);
      else for (const seq of [...this.msgs.keys()]) if (seq <= c.endSeq) this.msgs.delete(seq);
    } else if (c.op === "set") this.kv.set(c.key, c.size);
    else this.kv.delete(c.key);
  }
}

async function run(ops: Op[]): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "strata-limits-model-"));
  const model = new Model();
  const watcher = new Watcher();
  const open = async () => {
    const s = await Store.open({ dir, limits: LIMITS, sweepTimers: false, clock: () => model.now });
    s.onChange((c) => watcher.on(c));
    return s;
  };
  let store = await open();
  const issue = (op: Op): Promise<unknown> => {
    const v = (n: number) => new Uint8Array(n).fill(7);
    switch (op.t) {
      case "append":
        return store.stream(S).append(op.old ? { value: v(op.size), timestamp: T0 - 10_000 } : { value: v(op.size) });
      case "set":
        return store.stream(S).set(op.seq, { value: v(op.size) });
      case "del":
        return store.stream(S).delete(op.seq);
      case "delAll":
        return store.stream(S).deleteAll(op.endSeq === undefined ? {} : { endSeq: op.endSeq });
      case "kset":
        return store.kv(K).set(op.key, v(op.size), op.ttl === undefined ? {} : { ttlMs: op.ttl });
      case "kdel":
        return store.kv(K).delete(op.key);
      case "sconf":
        return store.stream(S).config(op.limits);
      case "kconf":
        return store.kv(K).config(op.limits);
      default:
        throw new Error(`not a write: ${op.t}`);
    }
  };
  const outcome = (p: Promise<unknown>) => p.then(() => undefined, (e: { code?: string }) => e.code ?? String(e));
  try {
    for (const op of ops) {
      if (op.t === "batch") {
        // Issued together: they share group commits, decided one after the other in call order.
        const got = await Promise.all(op.ops.map((o) => outcome(issue(o))));
        expect(got).toEqual(op.ops.map((o) => model.apply(o)));
      } else if (op.t === "tick") {
        model.apply(op);
      } else if (op.t === "sweep") {
        await store.sweep();
        model.apply(op);
      } else if (op.t === "reopen") {
        await store.close();
        if (op.reindex) await Store.reindex({ dir, limits: LIMITS, clock: () => model.now });
        store = await open();
      } else {
        const want = model.apply(op);
        expect(await outcome(issue(op)), JSON.stringify(op)).toBe(want);
      }
      const si = store.inventory(S);
      const ki = store.inventory(K);
      const strip2 = (l: Record<string, unknown>) => {
        const { valueBytesMax: _a, headersBytesMax: _b, keyBytesMax: _c, dedupWindowMs: _d, ...own } = l;
        return own;
      };
      const got = {
        stream: (await all(store.stream(S).getAll())).map((m) => [m.seq, m.value.byteLength, m.timestamp]),
        kv: (await all(store.kv(K).getAll())).map((e) => [e.key, e.value.byteLength]),
        s: [si.count, si.bytes],
        k: [ki.count, ki.bytes],
        sl: strip2(si.limits),
        kl: strip2(ki.limits),
      };
      expect(got, JSON.stringify(op)).toEqual(model.state());
      // The watcher holds what the store holds (kv: what the index holds, expired-unswept included).
      expect([...watcher.msgs].sort((a, b) => a[0] - b[0])).toEqual(got.stream.map(([seq, size]) => [seq, size]));
      expect(watcher.kv.size).toBe(ki.count);
    }
  } finally {
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe("per-location limits against a model", () => {
  it("any sequence of writes, limit changes, ticks, sweeps and reopens", async () => {
    await fc.assert(fc.asyncProperty(fc.array(opArb, { minLength: 5, maxLength: 40 }), run), { numRuns: 60 });
  }, 60_000);
});

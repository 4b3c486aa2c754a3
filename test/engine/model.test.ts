/**
 * Model-based property test of the engine: random sequences of every Store operation (alone,
 * issued concurrently so they share group commits, and in waves issued while earlier batches are
 * still in flight, so the pipelined commit decides on top of them), interleaved with clean reopens, simulated
 * crashes that leave a torn or corrupt unacknowledged tail, loss of the whole index, and OS crashes
 * that damage the (unsynced) index and leave its marker behind, compared after every step with the
 * plain model in ./model.ts.
 *
 * Invariants checked after each step: every acknowledged write is readable with its exact bytes;
 * every index entry points to a record whose checksum holds and whose location/seq matches (reads
 * verify both and throw CORRUPT otherwise); recovery of a damaged tail cuts exactly the damage and
 * keeps the acknowledged prefix; the change hook saw every committed revision once, in order.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";
import { Store } from "../../src/store.js";
import { frame } from "../../src/log/framing.js";
import { unsyncedMarkerPath } from "../../src/index/unsynced-marker.js";
import { encodeRecord } from "../../src/log/record.js";
import { listSegmentIds, segmentPath } from "../../src/log/segment-files.js";
import { Model, type Outcome } from "./model.js";
import { applyToModel, applyToStore, concretize, writeOpArb as workloadOpArb, type WriteOp } from "./workload.js";

const STREAMS = ["s/a", "s/b", "mixed"] as const;
const KVS = ["k/a", "k/b", "mixed"] as const;
const ALL_LOCS = ["s/a", "s/b", "k/a", "k/b", "mixed"];
const KEYS = ["a", "b", "c", "d.e", "f/g"] as const;
const LIMITS = {
  chunkBytes: 256,
  recordBytesMax: 8192,
  headersBytesMax: 1024,
  segmentBytesMax: 16384,
  commitBatchBytesMax: 8192,
  scanPageSize: 3,
};
const DEDUP_WINDOW_MS = 60_000;

type Op =
  | WriteOp
  | { t: "group"; ops: WriteOp[] }
  | { t: "waves"; waves: Array<{ ops: WriteOp[]; yields: number }> }
  | { t: "tick"; ms: number }
  | { t: "sweep" }
  | { t: "reopen" }
  | { t: "crash"; tail: "prefix" | "flip" | "garbage"; pick: number }
  | { t: "loseIndex" }
  | { t: "powerLoss"; keepBytes: number };

const LOCS = { streams: STREAMS, kvs: KVS, keys: KEYS };
const writeOpArb = (value: fc.Arbitrary<Uint8Array>) => workloadOpArb(value, LOCS);

const smallValue = fc.uint8Array({ maxLength: 40 });
const anyValue = fc.oneof({ weight: 6, arbitrary: smallValue }, { weight: 1, arbitrary: fc.uint8Array({ minLength: 257, maxLength: 1200 }) });

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 20, arbitrary: writeOpArb(anyValue) },
  { weight: 4, arbitrary: fc.record({ t: fc.constant("group" as const), ops: fc.array(writeOpArb(smallValue), { minLength: 2, maxLength: 12 }) }) },
  {
    weight: 3,
    arbitrary: fc.record({
      t: fc.constant("waves" as const),
      waves: fc.array(fc.record({ ops: fc.array(writeOpArb(smallValue), { minLength: 1, maxLength: 8 }), yields: fc.integer({ min: 0, max: 2 }) }), { minLength: 2, maxLength: 5 }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("tick" as const), ms: fc.oneof(fc.integer({ min: 1, max: 3000 }), fc.constant(DEDUP_WINDOW_MS + 1)) }) },
  { weight: 1, arbitrary: fc.constant({ t: "sweep" as const }) },
  { weight: 1, arbitrary: fc.constant({ t: "reopen" as const }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("crash" as const), tail: fc.constantFrom("prefix" as const, "flip" as const, "garbage" as const), pick: fc.nat() }) },
  { weight: 1, arbitrary: fc.constant({ t: "loseIndex" as const }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("powerLoss" as const), keepBytes: fc.nat() }) },
);

/** Runs one write on the store and the model; returns both outcomes (store's still pending). */
function issue(store: Store, model: Model, op: WriteOp): { store: Promise<Outcome>; model: Outcome } {
  const c = concretize(op, model);
  return { store: applyToStore(store, c), model: applyToModel(model, c) };
}

class Harness {
  store!: Store;
  readonly model: Model;
  readonly seen = new Map<string, number[]>();
  private now = 1_700_000_000_000;

  constructor(readonly dir: string) {
    this.model = new Model(DEDUP_WINDOW_MS, this.now);
  }

  async open(): Promise<void> {
    this.store = await Store.open({ dir: this.dir, limits: { ...LIMITS, dedupWindowMs: DEDUP_WINDOW_MS }, clock: () => this.now, sweepTimers: false, onWarning: () => {} });
    this.store.onChange((c) => {
      const list = this.seen.get(c.location) ?? [];
      list.push(c.revision);
      this.seen.set(c.location, list);
    });
  }

  async step(op: Op): Promise<void> {
    switch (op.t) {
      case "group": {
        const issued = op.ops.map((w) => issue(this.store, this.model, w));
        const results = await Promise.all(issued.map((i) => i.store));
        results.forEach((r, i) => expect(r, `group item ${i}: ${JSON.stringify(op.ops[i]?.t)}`).toEqual(issued[i]!.model));
        return;
      }
      case "waves": {
        // Each wave is issued while the ones before it are still being decided, written or
        // fsync'd, so batches are decided on top of a batch in flight (the pipelined commit).
        const issued: Array<{ store: Promise<Outcome>; model: Outcome }> = [];
        for (const wave of op.waves) {
          for (const w of wave.ops) issued.push(issue(this.store, this.model, w));
          for (let i = 0; i < wave.yields; i++) await new Promise((resolve) => setImmediate(resolve));
        }
        const results = await Promise.all(issued.map((i) => i.store));
        results.forEach((r, i) => expect(r, `wave item ${i}`).toEqual(issued[i]!.model));
        return;
      }
      case "tick":
        this.now += op.ms;
        this.model.now = this.now;
        return;
      case "sweep": {
        const expected = this.model.sweep();
        expect((await this.store.sweep()).expired).toBe(expected);
        return;
      }
      case "reopen":
        await this.store.close();
        return this.open();
      case "crash":
        return this.crash(op.tail, op.pick);
      case "loseIndex":
        await this.store.close();
        fs.rmSync(path.join(this.dir, "index"), { recursive: true, force: true });
        await this.open();
        expect(this.store.recovery.rebuilt).toBe(true);
        return;
      case "powerLoss":
        return this.powerLoss(op.keepBytes);
      default: {
        const i = issue(this.store, this.model, op);
        expect(await i.store).toEqual(i.model);
      }
    }
  }

  /** Leaves an unacknowledged, damaged record at the end of the active segment, as a crash mid-write would. */
  private async crash(tail: "prefix" | "flip" | "garbage", pick: number): Promise<void> {
    await this.store.close();
    const segDir = path.join(this.dir, "segments");
    const ids = listSegmentIds(segDir);
    const file = segmentPath(segDir, ids[ids.length - 1]!);
    const size = fs.statSync(file).size;
    const whole = frame(encodeRecord({ t: "sset", loc: "s/a", seq: 99, rev: 1_000_000, ts: this.now, value: new Uint8Array(64).fill(7), size: 64 }));
    let bytes: Buffer;
    if (tail === "prefix") bytes = whole.subarray(0, 1 + (pick % (whole.byteLength - 1)));
    else if (tail === "flip") {
      bytes = Buffer.from(whole);
      const at = pick % bytes.byteLength;
      bytes[at] = bytes[at]! ^ (1 + (pick % 255));
    } else bytes = Buffer.from(Array.from({ length: 1 + (pick % 50) }, (_, i) => (pick * 31 + i * 17) & 0xff));
    fs.appendFileSync(file, bytes);
    await this.open();
    expect(this.store.recovery.cut?.off).toBe(size);
    expect(fs.statSync(file).size).toBe(size);
  }

  /**
   * An OS crash with the store open: the index (never fsync'd while open) may have lost any of its
   * pages, here all after `keepBytes`; the unsynced marker left behind is from another boot.
   */
  private async powerLoss(keepBytes: number): Promise<void> {
    await this.store.close();
    const file = path.join(this.dir, "index", "index.mdb");
    fs.truncateSync(file, keepBytes % (fs.statSync(file).size + 1));
    fs.writeFileSync(unsyncedMarkerPath(path.join(this.dir, "index")), JSON.stringify({ bootId: "before-the-crash" }));
    await this.open();
    expect(this.store.recovery.rebuilt).toBe(true);
  }

  /** Everything readable equals the model. */
  async check(): Promise<void> {
    for (const loc of ALL_LOCS) {
      const m = this.model.locs.get(loc);
      const inv = this.store.inventory(loc);
      expect(inv.kind, `${loc} kind`).toBe(m?.kind);
      expect(inv.revision, `${loc} revision`).toBe(m?.rev ?? 0);
      expect((await this.store.changesSince(loc, 0, 1_000_000)).map((c) => c.revision)).toEqual(range(m?.rev ?? 0));
      if (!m) continue;
      if (m.kind === "stream") {
        expect(inv.lastSeq).toBe(m.lastSeq);
        expect(inv.count).toBe(m.msgs.size);
        const want = [...m.msgs.entries()].sort(([a], [b]) => a - b).map(([seq, msg]) => ({ seq, value: Buffer.from(msg.value), timestamp: msg.timestamp }));
        const got = [];
        for await (const msg of this.store.stream(loc).getAll()) got.push({ seq: msg.seq, value: Buffer.from(msg.value), timestamp: msg.timestamp });
        expect(got).toEqual(want);
        for (let seq = 1; seq <= m.lastSeq + 1; seq++) {
          const msg = await this.store.stream(loc).get(seq);
          expect(msg === undefined ? undefined : Buffer.from(msg.value)).toEqual(m.msgs.has(seq) ? Buffer.from(m.msgs.get(seq)!.value) : undefined);
        }
      } else {
        const want = this.model.liveKv(loc).map(([key, e]) => ({ key, value: Buffer.from(e.value), revision: e.revision, timestamp: e.timestamp, expiresAt: e.expiresAt }));
        const got = [];
        for await (const e of this.store.kv(loc).getAll()) got.push({ key: e.key, value: Buffer.from(e.value), revision: e.revision, timestamp: e.timestamp, expiresAt: e.expiresAt });
        expect(got).toEqual(want);
        const keys = [];
        for await (const k of this.store.kv(loc).keys()) keys.push(k);
        expect(keys).toEqual(want.map((e) => e.key));
      }
    }
  }

  /** The change hook reported each location's revisions 1..rev exactly once, in order. */
  checkChanges(): void {
    for (const loc of ALL_LOCS) expect(this.seen.get(loc) ?? [], `${loc} changes`).toEqual(range(this.model.locs.get(loc)?.rev ?? 0));
  }
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i + 1);
}

const root = fs.mkdtempSync(path.join(os.tmpdir(), "strata-model-"));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

describe("engine model", () => {
  it("matches the in-memory model under random operations, reopens, crashes and index loss", async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 60 }), async (ops) => {
        const h = new Harness(path.join(root, `run-${run++}`));
        await h.open();
        try {
          for (const op of ops) {
            await h.step(op);
            await h.check();
          }
          h.checkChanges();
        } finally {
          await h.store.close();
          fs.rmSync(h.dir, { recursive: true, force: true });
        }
      }),
      { numRuns: Number(process.env.STRATA_MODEL_RUNS ?? 100) },
    );
  }, 900_000);
});

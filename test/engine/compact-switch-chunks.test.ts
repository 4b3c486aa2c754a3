/**
 * The chunked switch of a compaction (docs/compaction.md, step 4; issue #11 "no sync work on the
 * event loop"): a run with more kept records than `compactSwitchChunkRecords` is switched in
 * chunks, each its own exclusive section with an event-loop turn before it, so that:
 * - the event loop gets turns during the switch (counted with setImmediate, no clock), and reads
 *   and writes issued between chunks succeed; writes overwriting kept records between chunks win
 *   and are counted dead exactly once (the index's deadBytes equal those of a rebuild from the log);
 * - a crash at any point of the switch (after the journal, after its first transaction, after any
 *   chunk, before its end; the fault hook leaves everything as a kill -9 would) loses nothing: the
 *   reopen finishes the switch from the journal, every acknowledged write reads back with its
 *   newest value, the segment files are accounted for (./compact-files.ts), no journal or
 *   "switching" output is left, deadBytes match a rebuild, and a second compaction works.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compactFaultHook, type CompactStep } from "../../src/compact.js";
import type { StoreOptions } from "../../src/config.js";
import { deadBytesBySegment } from "../../src/index/dead-chunks.js";
import { pendingSwitches } from "../../src/index/switch-journal.js";
import { Store } from "../../src/store.js";
import { segmentFileProblems, segsOf } from "./compact-files.js";

const CHUNK = 16;
const LIMITS = { segmentBytesMax: 128 * 1024, recordBytesMax: 16 * 1024, chunkBytes: 4096, headersBytesMax: 4096, compactRetainMs: 1, compactSwitchChunkRecords: CHUNK };
const KEYS = 600;
const KV = "sw/kv";

let root: string;
let n = 0;
beforeAll(() => (root = fs.mkdtempSync(path.join(os.tmpdir(), "strata-switch-"))));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

const opts = (dir: string): StoreOptions => ({ dir, limits: LIMITS, sweepTimers: false, compaction: false });
const key = (k: number) => `key${String(k).padStart(4, "0")}`;
const val = (k: number, r: number) => Buffer.from(`${key(k)}-round-${r}-`.padEnd(100, "x"));

/** Three rounds over every key (two thirds of the log dead), a few deletes; sealed. Returns what each key holds. */
async function workload(store: Store): Promise<Map<string, string | undefined>> {
  const kv = store.kv(KV);
  const truth = new Map<string, string | undefined>();
  for (let r = 0; r < 3; r++) {
    await Promise.all(Array.from({ length: KEYS }, (_, k) => kv.set(key(k), val(k, r))));
    for (let k = 0; k < KEYS; k++) truth.set(key(k), val(k, r).toString());
  }
  for (let k = 0; k < KEYS; k += 50) {
    await kv.delete(key(k));
    truth.set(key(k), undefined);
  }
  await store.sealActive();
  return truth;
}

async function check(store: Store, truth: Map<string, string | undefined>, ctx: string): Promise<void> {
  const kv = store.kv(KV);
  const got = await Promise.all([...truth.keys()].map((k) => kv.get(k).then((e) => [k, e && Buffer.from(e.value).toString()] as const)));
  for (const [k, v] of got) expect(v, `${ctx}: ${k}`).toBe(truth.get(k));
  expect(store.inventory(KV).count, `${ctx}: key count`).toBe([...truth.values()].filter((v) => v !== undefined).length);
}

/** The index's deadBytes, the same as a rebuild from the log counts them (reindex on a closed store). */
async function deadMatchesRebuild(dir: string, ctx: string): Promise<void> {
  const a = await Store.open(opts(dir));
  const live = [...deadBytesBySegment(a.index).entries()].sort((x, y) => x[0] - y[0]);
  await a.close();
  await Store.reindex(opts(dir));
  const b = await Store.open(opts(dir));
  try {
    expect([...deadBytesBySegment(b.index).entries()].sort((x, y) => x[0] - y[0]), `${ctx}: deadBytes vs a rebuild`).toEqual(live);
  } finally {
    await b.close();
  }
}

/**
 * Overwrites every 7th key and reads every 5th, without waiting: called between two chunks of the
 * switch, so some overwritten entries already point at the output and others still at an input.
 */
function interfere(store: Store, truth: Map<string, string | undefined>, round: number, pending: Array<Promise<unknown>>): void {
  const kv = store.kv(KV);
  for (let k = 3; k < KEYS; k += 7) {
    const v = val(k, round);
    pending.push(kv.set(key(k), v).then(() => truth.set(key(k), v.toString())));
  }
  for (let k = 1; k < KEYS; k += 5) {
    const expected = truth.get(key(k));
    const written = (k - 3) % 7 === 0;
    pending.push(kv.get(key(k)).then((e) => (written ? undefined : expect(e && Buffer.from(e.value).toString(), `read of ${key(k)} between chunks`).toBe(expected))));
  }
}

describe("the chunked switch of a compaction", () => {
  it("gives the event loop turns during the switch; reads and writes between chunks succeed, win, and are counted dead once", async () => {
    const dir = path.join(root, `turns-${n++}`);
    const store = await Store.open(opts(dir));
    let truth: Map<string, string | undefined>;
    let turns = 0;
    let counting = false;
    const tick = () => {
      if (!counting) return;
      turns++;
      setImmediate(tick);
    };
    const pending: Array<Promise<unknown>> = [];
    let switchCalls = 0;
    try {
      truth = await workload(store);
      // From the moment the output is complete and marked to the end of the switch.
      compactFaultHook.fn = (s) => {
        if (s === "local-marker") {
          counting = true;
          setImmediate(tick);
        }
        if (s === "switched") counting = false;
      };
      const report = await store.compact({
        onProgress: (p) => {
          if (p.phase !== "switch") return;
          // After the 6th chunk (and again after the 20th), writes and reads are issued.
          if (++switchCalls === 7 || switchCalls === 21) interfere(store, truth, 10 + switchCalls, pending);
        },
      });
      counting = false;
      await Promise.all(pending);
      expect(report.runs).toBe(1);
      expect(report.keptRecords).toBeGreaterThan(KEYS - 20);
      const chunks = Math.ceil((KEYS - KEYS / 50) / CHUNK);
      // The switch's transactions are spread over the event loop: at least a turn per chunk.
      expect(turns, "event-loop turns during the switch").toBeGreaterThanOrEqual(chunks);
      expect(switchCalls, "switch progress reports (one per chunk)").toBeGreaterThan(chunks);
      expect(pendingSwitches(store.index)).toEqual([]);
      await check(store, truth, "after the compaction");
    } finally {
      compactFaultHook.fn = undefined;
      counting = false;
      await store.close();
    }
    await deadMatchesRebuild(dir, "after the compaction");
    const again = await Store.open(opts(dir));
    try {
      await check(again, truth, "after a reopen and a rebuild");
      // The overwritten records died in the output: a second compaction drops them.
      const second = await again.compact();
      expect(second.dropped.overwritten).toBeGreaterThanOrEqual(Math.floor(KEYS / 7) - 2);
      await check(again, truth, "after a second compaction");
    } finally {
      await again.close();
    }
  }, 60_000);

  it("a crash anywhere in the switch loses nothing: the open finishes it from its journal (property over the crash point)", async () => {
    const steps: CompactStep[] = ["journal", "switch-begun", "switch-chunk", "switch-pieces", "switched"];
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...steps), fc.nat(45), fc.boolean(), async (step, chunk, writes) => {
        const dir = path.join(root, `crash-${n++}`);
        const ctx = `crash at ${step}${step === "switch-chunk" ? ` #${chunk}` : ""}${writes ? " with writes between chunks" : ""}`;
        const store = await Store.open(opts(dir));
        let truth: Map<string, string | undefined>;
        const pending: Array<Promise<unknown>> = [];
        let crashed = false;
        try {
          truth = await workload(store);
          let chunks = 0;
          compactFaultHook.fn = (s) => {
            if (s === "switch-chunk" && writes && chunks === 2) interfere(store, truth, 99, pending);
            if (s === "switch-chunk") chunks++;
            // The last chunk stands in for a crash point past the pieces' number.
            if (s === step && (step !== "switch-chunk" || chunks > chunk || chunks >= Math.ceil((KEYS - KEYS / 50) / CHUNK))) {
              crashed = true;
              throw new Error(`crash at ${s}`);
            }
          };
          await expect(store.compact(), ctx).rejects.toThrow("crash at");
          expect(crashed, ctx).toBe(true);
          compactFaultHook.fn = undefined;
          // The writes issued before the crash are acknowledged while the store still runs.
          await Promise.all(pending);
        } finally {
          compactFaultHook.fn = undefined;
          await store.close();
        }
        const reopened = await Store.open(opts(dir));
        try {
          expect(pendingSwitches(reopened.index), `${ctx}: switches left pending`).toEqual([]);
          // Begun and not ended before the crash: the open finished it, and says so.
          const cutShort = step === "switch-begun" || step === "switch-chunk" || step === "switch-pieces";
          expect(reopened.recovery.switchesFinished.length, `${ctx}: switches the open finished`).toBe(cutShort ? 1 : 0);
          const segs = segsOf(reopened.index.segs);
          expect([...segs.values()].filter((i) => i.state === "switching"), ctx).toEqual([]);
          expect([...reopened.index.sys.getKeys({ start: "switch/", end: "switch0" })], `${ctx}: journal rows left`).toEqual([]);
          expect(segmentFileProblems(path.join(dir, "segments"), segs), ctx).toEqual([]);
          // A crash after the switch began means the open finished it: its inputs are superseded.
          if (step !== "journal") expect([...segs.values()].filter((i) => i.state === "superseded").length, `${ctx}: superseded inputs`).toBeGreaterThan(0);
          else expect([...segs.values()].filter((i) => i.state === "superseded").length, `${ctx}: nothing superseded`).toBe(0);
          await check(reopened, truth, `${ctx}, reopened`);
        } finally {
          await reopened.close();
        }
        await deadMatchesRebuild(dir, ctx);
        const again = await Store.open(opts(dir));
        try {
          await check(again, truth, `${ctx}, after a rebuild`);
          await again.compact();
          await check(again, truth, `${ctx}, after a second compaction`);
        } finally {
          await again.close();
        }
      }),
      { numRuns: 10, seed: 0x5717c4 },
    );
  }, 120_000);
});

/**
 * The compaction half of the tier model test (./tier-model.test.ts): its operations and their
 * arbitrary, its limits and milder faults, and the steps that run them on the test's harness
 * (`CompactionHarness`, the part of it they use):
 * - `compact`: a compaction under the object store's faults with writes racing it; it fails only
 *   with UNAVAILABLE or CORRUPT (retried a few times), and changes nothing readable;
 * - `compactCrash`: a compaction stopped after a given step by `compactFaultHook`, the process
 *   dying there; the open after it leaves no file (../engine/compact-files.ts) or object (every
 *   output and marker names an output the index knows) of it unaccounted for;
 * - `restoreEach`: a restore onto an empty disk from every checkpoint the object store holds, and
 *   from none, each giving exactly the model's state (compaction deleted no object one needs).
 * Not a test file: the harness owns the state; what a step changes of it is named in the interface.
 */
import fs from "node:fs";
import path from "node:path";
import fc from "fast-check";
import { expect } from "vitest";
import { CompactCrash, compactFaultHook, type CompactStep } from "../../src/compact.js";
import { Store } from "../../src/store.js";
import { MemoryObjectStore, type FaultyObjectStore } from "../../src/testing/fault-store.js";
import { checkpointsPrefix, compactionsPrefix, parseCompactionMarkerKey, parseSegmentKey, segmentsPrefix } from "../../src/tier/segment-keys.js";
import { COMPACTED_BASE, segmentFileProblems, segsOf } from "../engine/compact-files.js";
import type { Model, Outcome } from "../engine/model.js";
import { DEDUP_WINDOW_MS, LIMITS, SERVER_ID, anyValue, checkpointKeyOf, isFault, smallValue, writeOpArb, type Op, type WriteOp } from "./tier-model-ops.js";
import { copyLive } from "../helpers/copy-live.js";

/**
 * Compaction limits: every sealed segment counts as small (merged), runs of up to three segments,
 * inputs deletable 1 ms after their switch once the checkpoints allow (a compaction advances the
 * clock by that first, so it reclaims what the one before superseded).
 */
export const COMPACT_LIMITS = { compactSmallBytes: LIMITS.segmentBytesMax, compactRunBytesMax: 3 * LIMITS.segmentBytesMax, compactDeadFractionMin: 0.3, compactRetainMs: 1 };
export const COMPACT_ATTEMPTS = 6;
export const CRASH_STEPS: CompactStep[] = ["picked", "written", "uploaded", "object-marker", "local-marker", "switched", "reclaim-local", "reclaim-object", "reclaimed"];

/** The operations that compact, crash a compaction, and restore from every checkpoint. */
export type CompactionOp =
  | { t: "compact"; sealActive: boolean; all: boolean; ops: WriteOp[] }
  | { t: "compactCrash"; sealActive: boolean; step: CompactStep; nth: number }
  | { t: "restoreEach" };

/** What the compaction steps use of the test's harness; they change only `now`, the model's clock, the coverage and the flags below. */
export interface CompactionHarness {
  readonly store: Store;
  readonly faulty: FaultyObjectStore;
  /** The object store behind every fault injector, outliving each Store. */
  readonly memory: MemoryObjectStore;
  readonly dir: string;
  readonly cacheBytes: number;
  now: number;
  readonly model: Model;
  readonly coverage: { compactRuns: number; compactFailures: number; compactCrashes: number; restoresAfterCompaction: number; restoresFromPreCompactionCheckpoint: number };
  /** The compaction steps a crash stopped a compaction after. */
  readonly crashedAt: Set<CompactStep>;
  /** Set once a compaction may have dropped records: the change feed may then lack revisions. */
  compacted: boolean;
  /** A compaction failed since the last open: an output it could not delete waits for the next open. */
  untidy: boolean;
  /** Checkpoint keys that existed when the last compaction switched (a restore from one is from before it). */
  preCompactionCheckpoints: Set<string>;
  apply(w: WriteOp): { store: Promise<Outcome>; model: Outcome };
  open(): Promise<void>;
  close(): Promise<void>;
  uploadAll(): Promise<void>;
  check(store?: Store, ctx?: string): Promise<void>;
}

/** Longer sequences that seal, upload, checkpoint, compact (crashing at every step) and restore a lot. */
export const compactionOpArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 20, arbitrary: writeOpArb(anyValue, 1) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant("group" as const), ops: fc.array(writeOpArb(smallValue, 1), { minLength: 2, maxLength: 10 }) }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("tick" as const), ms: fc.oneof(fc.integer({ min: 1, max: 3000 }), fc.constant(DEDUP_WINDOW_MS + 1)) }) },
  { weight: 4, arbitrary: fc.constant({ t: "seal" as const }) },
  { weight: 2, arbitrary: fc.constant({ t: "upload" as const }) },
  { weight: 3, arbitrary: fc.record({ t: fc.constant("checkpoint" as const), ops: fc.array(writeOpArb(smallValue, 0), { maxLength: 6 }) }) },
  { weight: 1, arbitrary: fc.constant({ t: "reopen" as const }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("crash" as const), pick: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ t: fc.constant("restore" as const), checkpoint: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ t: fc.constant("loseDisk" as const), checkpoint: fc.constantFrom(false, true) }) },
  { weight: 6, arbitrary: fc.record({ t: fc.constant("compact" as const), sealActive: fc.boolean(), all: fc.constantFrom(true, true, false), ops: fc.array(writeOpArb(smallValue, 0), { maxLength: 4 }) }) },
  { weight: 6, arbitrary: fc.record({ t: fc.constant("compactCrash" as const), sealActive: fc.boolean(), step: fc.constantFrom(...CRASH_STEPS), nth: fc.integer({ min: 0, max: 1 }) }) },
  { weight: 2, arbitrary: fc.constant({ t: "restoreEach" as const }) },
);
/** Milder faults for the compaction property, so most compactions get through and reach every step. */
export const MILD_FAULTS = { putFailRate: 0.03, failAfterApplyRate: 0.5, getFailRate: 0.01, corruptRate: 0.01, delayMsMax: 1 };

/**
 * A compaction under the object store's faults, with writes racing it. It may fail (an upload,
 * a fetch of an evicted input, a checkpoint it waits for), with UNAVAILABLE or CORRUPT only, and
 * leaves everything readable either way.
 */
export async function compact(h: CompactionHarness, sealActive: boolean, all: boolean, ops: WriteOp[]): Promise<void> {
  const checkpoints = await checkpointKeys(h.memory);
  h.compacted = true;
  h.now += COMPACT_LIMITS.compactRetainMs;
  h.model.now = h.now;
  const compaction = h.store.compact({ sealActive, all }).then(
    (report) => ({ ok: true as const, report }),
    (err: unknown) => {
      if (!isFault(err)) throw err;
      return { ok: false as const, err };
    },
  );
  const issued = ops.map((w) => h.apply(w));
  const results = await Promise.all(issued.map((i) => i.store));
  results.forEach((r, i) => expect(r, `item ${i}: ${ops[i]!.t} racing a compaction`).toEqual(issued[i]!.model));
  let r = await compaction;
  // A compaction that met an injected fault is tried again (a few times), as an operator would.
  for (let attempt = 1; !r.ok && attempt < COMPACT_ATTEMPTS; attempt++) {
    h.coverage.compactFailures++;
    if (process.env.STRATA_TIER_MODEL_COVERAGE) console.log(`compaction failed: ${r.err.message}`);
    // Until the next open, a failed compaction may have left an output it could not delete.
    h.untidy = true;
    r = await h.store.compact({ sealActive, all }).then(
      (report) => ({ ok: true as const, report }),
      (err: unknown) => {
        if (!isFault(err)) throw err;
        return { ok: false as const, err };
      },
    );
  }
  if (!r.ok) {
    h.untidy = true;
    h.coverage.compactFailures++;
    return;
  }
  const runs = r.report.runs;
  h.coverage.compactRuns += runs;
  if (runs > 0) h.preCompactionCheckpoints = new Set([...h.preCompactionCheckpoints, ...checkpoints]);
}

/**
 * A compaction stopped after its `nth` `step` as if the process died there (the data directory
 * copied as it is, the object store cut off from the old instance, the copy opened in its
 * place). The open must leave no file or object of it unaccounted for.
 */
export async function compactCrash(h: CompactionHarness, sealActive: boolean, step: CompactStep, nth: number): Promise<void> {
  const checkpoints = await checkpointKeys(h.memory);
  let hits = 0;
  let stopped = false;
  compactFaultHook.fn = (s) => {
    if (s === step && hits++ === nth) {
      stopped = true;
      throw new Error(`crash after ${s}`);
    }
  };
  h.compacted = true;
  h.now += COMPACT_LIMITS.compactRetainMs;
  h.model.now = h.now;
  let error: unknown;
  try {
    // Tried again after an injected fault (a few times), until it completes or the hook stops it.
    for (let attempt = 1; attempt <= COMPACT_ATTEMPTS; attempt++) {
      error = undefined;
      try {
        await h.store.compact({ sealActive, all: true });
      } catch (err) {
        error = err;
      }
      if (stopped || error === undefined || !isFault(error)) break;
      h.untidy = true;
      h.coverage.compactFailures++;
    }
  } finally {
    delete compactFaultHook.fn;
  }
  if (!stopped) {
    if (error !== undefined && !isFault(error)) throw error;
    // A compaction that failed may leave an output it could not delete until the next open.
    if (error !== undefined) h.untidy = true;
    return;
  }
  expect(error, "a compaction stopped by the hook rejects with CompactCrash").toBeInstanceOf(CompactCrash);
  h.coverage.compactCrashes++;
  h.crashedAt.add(step);
  if (["switched", "reclaim-local", "reclaim-object", "reclaimed"].includes(step)) h.preCompactionCheckpoints = new Set([...h.preCompactionCheckpoints, ...checkpoints]);
  const copy = `${h.dir}-crash`;
  fs.mkdirSync(path.join(copy, "index"), { recursive: true });
  copyLive(path.join(h.dir, "index", "index.mdb"), path.join(copy, "index", "index.mdb"));
  copyLive(path.join(h.dir, "segments"), path.join(copy, "segments"));
  h.faulty.setOffline(true);
  await h.close();
  fs.rmSync(h.dir, { recursive: true, force: true });
  fs.renameSync(copy, h.dir);
  await h.open();
  const segs = segsOf(h.store.index.segs);
  expect(segmentFileProblems(path.join(h.dir, "segments"), segs), `files after a crash after ${step}`).toEqual([]);
  // Deleting an orphan object can fail under the injected faults; then the next open retries.
  if (h.faulty.counts.writeFailures === 0) expect(await objectProblems(h.memory, segs), `objects after a crash after ${step}`).toEqual([]);
}

/** Compaction outputs and markers in the object store that the index does not know (orphans). */
async function objectProblems(memory: MemoryObjectStore, segs: ReadonlyMap<number, unknown>): Promise<string[]> {
  const problems: string[] = [];
  for await (const o of memory.list(segmentsPrefix(SERVER_ID))) {
    const id = parseSegmentKey(SERVER_ID, o.key);
    if (id !== undefined && id >= COMPACTED_BASE && !segs.has(id)) problems.push(`orphan output object ${o.key}`);
  }
  for await (const o of memory.list(compactionsPrefix(SERVER_ID))) {
    const c = parseCompactionMarkerKey(SERVER_ID, o.key);
    if (c === undefined) problems.push(`unreadable marker object ${o.key}`);
    else if (!segs.has(c.id)) problems.push(`orphan marker object ${o.key}`);
  }
  return problems;
}

async function checkpointKeys(memory: MemoryObjectStore): Promise<string[]> {
  const out: string[] = [];
  for await (const o of memory.list(checkpointsPrefix(SERVER_ID))) out.push(o.key);
  return out;
}

/**
 * Once every sealed segment is uploaded, a restore onto an empty disk from each checkpoint the
 * object store holds (any of them is picked when the newer ones are damaged), and from none,
 * gives exactly the model's state: compaction never deleted an object one of them needs. Each
 * restore runs on a copy of the object store (holding only its checkpoint) and is discarded.
 */
export async function restoreEach(h: CompactionHarness): Promise<void> {
  await h.uploadAll();
  const checkpoints = await checkpointKeys(h.memory);
  for (const chosen of [...checkpoints, undefined]) {
    const copy = new MemoryObjectStore();
    for await (const o of h.memory.list(`${SERVER_ID}/`)) {
      if (o.key.startsWith(checkpointsPrefix(SERVER_ID)) && o.key !== chosen) continue;
      await copy.put(o.key, (await h.memory.get(o.key))!);
    }
    const dir = `${h.dir}-restore`;
    const store = await Store.open({ dir, id: SERVER_ID, objectStore: copy, cacheBytes: h.cacheBytes, limits: { ...LIMITS, ...COMPACT_LIMITS }, clock: () => h.now, sweepTimers: false, compaction: false });
    try {
      const cp = store.recovery.restoredCheckpoint;
      expect(cp === undefined ? undefined : checkpointKeyOf(cp), "the restore used the one checkpoint left").toBe(chosen);
      if (h.compacted) h.coverage.restoresAfterCompaction++;
      if (chosen !== undefined && h.preCompactionCheckpoints.has(chosen)) h.coverage.restoresFromPreCompactionCheckpoint++;
      await h.check(store, `restored from ${chosen ?? "no checkpoint"}`);
    } finally {
      await store.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }
}

/**
 * The compaction benchmark (docs/compaction.md): an in-process `Store` with a directory tier
 * (`dir:`), fed the kv overwrite workload of issue #10 — `keys` keys each overwritten `overwrites`
 * times with incompressible values of `valueBytes` (full: 1,000 × 1,000 × 1 KiB, so ~1 GiB of
 * log with ~1 MiB live). Background compaction is off; each compaction here is asked for.
 *
 * Per run:
 * 1. Space: write the workload, seal, wait for every upload and a checkpoint, then measure the
 *    segment bytes on disk and in the object store and the live bytes (the values the kv holds).
 *    Compact everything at an unlimited I/O rate (`compact({ sealActive: true, all: true })`, with
 *    `compactRetainMs` of 1 ms, then a reclaim once that has passed, so the inputs are deleted),
 *    measure again, and check that every key still reads its last value. Figures: bytes
 *    before/after, after ÷ live (goal ≤ 1.2 on disk and in the object store), and compaction
 *    throughput in MiB of input log per second.
 * 2. Online: reopen with the default limits (the default compaction rate limit), write
 *    `deadRounds` more rounds of overwrites (dead data to compact), then run a closed-loop write
 *    load (kv sets of `valueBytes` to another location, `loadInFlight` in flight) for `loadMs`
 *    without compaction, and again while a compaction of that dead data runs (until it ends).
 *    Figures: writes/s and ack latency p50/p99/p99.9 of both; goal: during ≥ 70 % of without,
 *    and p99.9 during < 20 ms.
 *
 * Every figure is the median of `runs` runs (each run's value kept). `npx tsx bench/compact.ts
 * [--tiny] [--runs N] [--dir DIR] [--out FILE]` prints one JSON document on stdout (progress on
 * stderr); `strata bench --suite compact` runs it too, and the test suite runs it at tiny scale.
 * In-process callers may scale the workload down with `keys`, `overwrites` and `deadRounds`.
 */
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import type { Histogram } from "hdr-histogram-js";
import type { CompactReport } from "../src/compact.js";
import { warningLineLogger } from "../src/logger.js";
import { Store } from "../src/store.js";
import { openObjectStore } from "../src/tier/object-store.js";
import { checkSuiteOptions, isMainModule, runAsScript, type Scale } from "./lib/args.js";
import { makeTempDir, removeDir } from "./lib/fs.js";
import { runInFlight } from "./lib/load.js";
import { benchHeader, judge, targetsTail, type MachineInfo, type TargetResult, type TargetSpec } from "./lib/report.js";
import { figure, latencyHistogram, median, perSecond, recordMs, type Figure } from "./lib/stats.js";

export type { Scale };

export interface CompactBenchOptions {
  scale: Scale;
  runs: number;
  /** Parent of the scratch directories (default: the OS temp dir). They are removed afterwards. */
  dir?: string;
  /** Receives one line per step; default: silent. */
  progress?: (line: string) => void;
  /** Scale the workload down (or up) from the scale's defaults. */
  keys?: number;
  overwrites?: number;
  deadRounds?: number;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const LOCATION = "bench/compact";
const LOAD_LOCATION = "bench/load";
const SERVER_ID = "bench";
/** An I/O rate no disk reaches: the space phase measures what compaction itself can do. */
const UNLIMITED_RATE_BYTES_PER_SEC = 2 ** 40;

export interface CompactBenchParams {
  keys: number;
  overwrites: number;
  valueBytes: number;
  /** Writes in flight while the workload is written. */
  writeInFlight: number;
  /** Rounds of overwrites written before the online phase, for its compaction to chew on. */
  deadRounds: number;
  loadInFlight: number;
  /** Keys the load cycles through (in its own location). */
  loadKeys: number;
  /** How long the load runs without compaction. */
  loadMs: number;
  /** Limits other than the defaults (small segments at tiny scale, so there are several). */
  limits: Record<string, number>;
}

const PARAMS: Readonly<Record<Scale, CompactBenchParams>> = {
  tiny: {
    keys: 50,
    overwrites: 40,
    valueBytes: 1024,
    writeInFlight: 16,
    deadRounds: 20,
    loadInFlight: 8,
    loadKeys: 100,
    loadMs: 300,
    limits: { chunkBytes: 64 * KiB, headersBytesMax: 32 * KiB, recordBytesMax: 128 * KiB, segmentBytesMax: 256 * KiB, blockBytes: 16 * KiB },
  },
  full: {
    keys: 1000,
    overwrites: 1000,
    valueBytes: 1024,
    writeInFlight: 64,
    deadRounds: 300,
    loadInFlight: 16,
    loadKeys: 1000,
    loadMs: 5000,
    limits: {},
  },
};

export interface AckLatency {
  p50: number;
  p99: number;
  p999: number;
  max: number;
  unit: "us";
}

export interface LoadFigures {
  writesPerSec: Figure;
  ack: AckLatency;
}

export interface CompactBenchResult {
  suite: "compact";
  scale: Scale;
  runs: number;
  startedAt: string;
  elapsedSeconds: number;
  machine: MachineInfo;
  params: CompactBenchParams;
  backend: string;
  figures: {
    space: {
      liveBytes: Figure;
      localBytesBefore: Figure;
      localBytesAfter: Figure;
      objectBytesBefore: Figure;
      objectBytesAfter: Figure;
      localAfterPerLive: Figure;
      objectAfterPerLive: Figure;
      segmentsBefore: Figure;
      segmentsAfter: Figure;
      compactSeconds: Figure;
      compactMBps: Figure;
      droppedRecords: Figure;
      reclaimedSegments: Figure;
    };
    online: {
      withoutCompaction: LoadFigures;
      duringCompaction: LoadFigures;
      throughputRatio: Figure;
      compactSeconds: Figure;
      compactRateBytesPerSec: number;
    };
  };
  targets: TargetResult[];
  targetsMet: boolean;
  /** False at tiny scale, where the targets are reported but mean nothing. */
  targetsApply: boolean;
}

const TARGETS: readonly TargetSpec[] = [
  { name: "localAfterPerLive", figure: "figures.space.localAfterPerLive.median", op: "<=", threshold: 1.2, unit: "bytes/byte" },
  { name: "objectAfterPerLive", figure: "figures.space.objectAfterPerLive.median", op: "<=", threshold: 1.2, unit: "bytes/byte" },
  { name: "throughputDuringCompaction", figure: "figures.online.throughputRatio.median", op: ">=", threshold: 0.7, unit: "ratio" },
  { name: "ackP999DuringCompactionMs", figure: "figures.online.duringCompaction.ack.p999", op: "<", threshold: 20, unit: "ms" },
];

interface SpaceRun {
  liveBytes: number;
  localBefore: number;
  localAfter: number;
  objectBefore: number;
  objectAfter: number;
  segmentsBefore: number;
  segmentsAfter: number;
  compactSeconds: number;
  droppedRecords: number;
  reclaimedSegments: number;
}

interface LoadRun {
  writesPerSec: number;
  ack: AckLatency;
}

interface Run {
  space: SpaceRun;
  without: LoadRun;
  during: LoadRun;
  onlineCompactSeconds: number;
}

/** Random bytes values are cut from (slices of a pool much larger than a block compress no better than fresh ones). */
const VALUE_POOL_BYTES = 8 * MiB;

class Bench {
  readonly data: string;
  readonly tier: string;
  private readonly pool = randomBytes(VALUE_POOL_BYTES);
  private readonly slots: number;

  constructor(
    readonly root: string,
    readonly p: CompactBenchParams,
    readonly progressLine: (line: string) => void,
  ) {
    this.data = path.join(root, "data");
    this.tier = path.join(root, "tier");
    this.slots = Math.floor((this.pool.byteLength - p.valueBytes) / 64);
  }

  open(limits: Record<string, number>): Promise<Store> {
    return Store.open({
      dir: this.data,
      id: SERVER_ID,
      tier: `dir:${this.tier}`,
      sweepTimers: false,
      compaction: false,
      limits: { ...this.p.limits, ...limits },
      logger: warningLineLogger((line) => this.progressLine(`store warning: ${line}`)),
    });
  }

  /** The value of write number `n` (a slice of the pool; the same n gives the same bytes). */
  value(n: number): Buffer {
    const at = ((n * 7919) % this.slots) * 64;
    return this.pool.subarray(at, at + this.p.valueBytes);
  }

  /** Rounds `from … to - 1` of overwrites of every key. */
  async overwrite(store: Store, from: number, to: number): Promise<void> {
    const kv = store.kv(LOCATION);
    const k = this.p.keys;
    await runInFlight(this.p.writeInFlight, (to - from) * k, (i) => {
      const n = from * k + i;
      return kv.set(`k${n % k}`, this.value(n));
    });
  }

  /** Every key holds the value of the last round. */
  async check(store: Store, rounds: number): Promise<void> {
    const kv = store.kv(LOCATION);
    const k = this.p.keys;
    for (let key = 0; key < k; key++) {
      const got = await kv.get(`k${key}`);
      const want = this.value((rounds - 1) * k + key);
      if (!got || Buffer.compare(Buffer.from(got.value), want) !== 0) throw new Error(`after compaction k${key} does not hold its last value`);
    }
  }

  /** Bytes of the segment files on the local disk. */
  localBytes(): number {
    const dir = path.join(this.data, "segments");
    let total = 0;
    for (const name of fs.readdirSync(dir)) if (name.endsWith(".seg")) total += fs.statSync(path.join(dir, name)).size;
    return total;
  }

  /** Bytes of the server's sealed segment objects in the object store. */
  async objectBytes(): Promise<number> {
    const objects = openObjectStore(`dir:${this.tier}`);
    try {
      let total = 0;
      for await (const o of objects.list(`${SERVER_ID}/segments/`)) total += o.size;
      return total;
    } finally {
      await objects.close();
    }
  }
}

/** Seals the active segment and waits until every segment and a checkpoint are in the object store. */
async function settle(store: Store): Promise<void> {
  await store.sealActive();
  await store.tier!.drained();
  await store.tier!.checkpoint();
}

/**
 * A compaction of everything, then — once `compactRetainMs` (1 ms here) has passed since its last
 * switch — a reclaim of the inputs it left (the reclaim takes the checkpoint the deletion of an
 * input's object waits for). Returns the report with the segments both reclaimed.
 */
async function compactAndReclaim(store: Store, sealActive: boolean): Promise<CompactReport> {
  const report = await store.compact({ sealActive, all: true });
  await new Promise((resolve) => setTimeout(resolve, 2));
  return { ...report, reclaimedSegments: report.reclaimedSegments + (await store.compactor.reclaim()) };
}

async function spacePhase(b: Bench): Promise<SpaceRun> {
  const p = b.p;
  const store = await b.open({ compactRateBytesPerSec: UNLIMITED_RATE_BYTES_PER_SEC, compactRetainMs: 1 });
  try {
    b.progressLine(`writing ${p.keys} keys × ${p.overwrites} overwrites of ${p.valueBytes} bytes`);
    await b.overwrite(store, 0, p.overwrites);
    await settle(store);
    const liveBytes = store.inventory(LOCATION).bytes;
    const localBefore = b.localBytes();
    const objectBefore = await b.objectBytes();
    b.progressLine(`before: ${mib(localBefore)} MiB on disk, ${mib(objectBefore)} MiB in the object store, ${mib(liveBytes)} MiB live`);
    const t0 = performance.now();
    const report = await compactAndReclaim(store, true);
    const compactSeconds = (performance.now() - t0) / 1000;
    await b.check(store, p.overwrites);
    const localAfter = b.localBytes();
    const objectAfter = await b.objectBytes();
    b.progressLine(`after ${compactSeconds.toFixed(2)} s: ${mib(localAfter)} MiB on disk, ${mib(objectAfter)} MiB in the object store`);
    const d = report.dropped;
    return {
      liveBytes,
      localBefore,
      localAfter,
      objectBefore,
      objectAfter,
      segmentsBefore: report.segmentsBefore,
      segmentsAfter: report.segmentsAfter,
      compactSeconds,
      droppedRecords: d.overwritten + d.deleted + d.expired + d.chunks + d.config,
      reclaimedSegments: report.reclaimedSegments,
    };
  } finally {
    await store.close();
  }
}

function ackLatency(h: Histogram): AckLatency {
  return { p50: h.getValueAtPercentile(50), p99: h.getValueAtPercentile(99), p999: h.getValueAtPercentile(99.9), max: h.maxValue, unit: "us" };
}

/**
 * A closed-loop write load of `loadInFlight` workers until `until()` is true (checked before
 * each write; each worker writes at least once).
 */
async function load(b: Bench, store: Store, until: () => boolean, offset: number): Promise<LoadRun & { writes: number }> {
  const kv = store.kv(LOAD_LOCATION);
  const h = latencyHistogram();
  let writes = 0;
  const worker = async (w: number): Promise<void> => {
    do {
      const n = offset + writes++;
      const t0 = performance.now();
      await kv.set(`k${(n * b.p.loadInFlight + w) % b.p.loadKeys}`, b.value(n));
      recordMs(h, performance.now() - t0);
    } while (!until());
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: b.p.loadInFlight }, (_, w) => worker(w)));
  const ms = performance.now() - t0;
  const out = { writesPerSec: perSecond(writes, ms), ack: ackLatency(h), writes };
  h.destroy();
  return out;
}

async function onlinePhase(b: Bench): Promise<{ without: LoadRun; during: LoadRun; compactSeconds: number; rate: number }> {
  const p = b.p;
  const store = await b.open({});
  try {
    b.progressLine(`writing ${p.deadRounds} more rounds of overwrites to compact under load`);
    await b.overwrite(store, p.overwrites, p.overwrites + p.deadRounds);
    await settle(store);
    const deadline = performance.now() + p.loadMs;
    const without = await load(b, store, () => performance.now() >= deadline, 0);
    b.progressLine(`load without compaction: ${without.writesPerSec.toFixed(0)} writes/s, ack p99.9 ${without.ack.p999} us`);
    let compacting = true;
    const t0 = performance.now();
    const work = store.compact({ all: true }).finally(() => (compacting = false));
    const [during] = await Promise.all([load(b, store, () => !compacting, without.writes), work]);
    const compactSeconds = (performance.now() - t0) / 1000;
    b.progressLine(`load during a ${compactSeconds.toFixed(2)} s compaction: ${during.writesPerSec.toFixed(0)} writes/s, ack p99.9 ${during.ack.p999} us`);
    await b.check(store, p.overwrites + p.deadRounds);
    return { without, during, compactSeconds, rate: store.limits.compactRateBytesPerSec };
  } finally {
    await store.close();
  }
}

const mib = (n: number): string => (n / MiB).toFixed(2);

export async function runCompactBench(opts: CompactBenchOptions): Promise<CompactBenchResult> {
  checkSuiteOptions(opts);
  const p: CompactBenchParams = { ...PARAMS[opts.scale] };
  for (const k of ["keys", "overwrites", "deadRounds"] as const) {
    const v = opts[k];
    if (v === undefined) continue;
    if (!Number.isSafeInteger(v) || v < 1) throw new Error(`${k} must be a positive integer, got ${String(v)}`);
    p[k] = v;
  }
  const progress = opts.progress ?? (() => undefined);
  const startedAt = new Date();
  const started = performance.now();
  const runs: Run[] = [];
  let rate = 0;
  for (let run = 1; run <= opts.runs; run++) {
    progress(`run ${run} of ${opts.runs}`);
    const root = makeTempDir("strata-bench-compact", opts.dir);
    try {
      const b = new Bench(root, p, progress);
      const space = await spacePhase(b);
      const online = await onlinePhase(b);
      rate = online.rate;
      runs.push({ space, without: online.without, during: online.during, onlineCompactSeconds: online.compactSeconds });
    } finally {
      removeDir(root);
    }
  }
  const figures = collect(runs, rate);
  const targets = TARGETS.map((t) => judge(t, lookup(figures, t.figure, t.unit === "ms")));
  return {
    ...benchHeader("compact", opts, startedAt, started),
    params: p,
    backend: "in-process Store, directory tier (dir:) on the same disk",
    figures,
    ...targetsTail(targets, opts.scale),
  };
}

function loadFigures(runs: LoadRun[]): LoadFigures {
  const pick = (k: keyof Omit<AckLatency, "unit">) => median(runs.map((r) => r.ack[k]));
  return { writesPerSec: figure(runs.map((r) => r.writesPerSec), "writes/s"), ack: { p50: pick("p50"), p99: pick("p99"), p999: pick("p999"), max: pick("max"), unit: "us" } };
}

function collect(runs: Run[], rate: number): CompactBenchResult["figures"] {
  const s = runs.map((r) => r.space);
  const bytes = (f: (r: SpaceRun) => number) => figure(s.map(f), "bytes", 15);
  const count = (f: (r: SpaceRun) => number, unit: string) => figure(s.map(f), unit, 15);
  return {
    space: {
      liveBytes: bytes((r) => r.liveBytes),
      localBytesBefore: bytes((r) => r.localBefore),
      localBytesAfter: bytes((r) => r.localAfter),
      objectBytesBefore: bytes((r) => r.objectBefore),
      objectBytesAfter: bytes((r) => r.objectAfter),
      localAfterPerLive: figure(s.map((r) => r.localAfter / r.liveBytes), "bytes/byte"),
      objectAfterPerLive: figure(s.map((r) => r.objectAfter / r.liveBytes), "bytes/byte"),
      segmentsBefore: count((r) => r.segmentsBefore, "segments"),
      segmentsAfter: count((r) => r.segmentsAfter, "segments"),
      compactSeconds: figure(s.map((r) => r.compactSeconds), "s"),
      compactMBps: figure(s.map((r) => r.localBefore / MiB / r.compactSeconds), "MiB/s of input log"),
      droppedRecords: count((r) => r.droppedRecords, "records"),
      reclaimedSegments: count((r) => r.reclaimedSegments, "segments"),
    },
    online: {
      withoutCompaction: loadFigures(runs.map((r) => r.without)),
      duringCompaction: loadFigures(runs.map((r) => r.during)),
      throughputRatio: figure(runs.map((r) => r.during.writesPerSec / r.without.writesPerSec), "ratio"),
      compactSeconds: figure(runs.map((r) => r.onlineCompactSeconds), "s"),
      compactRateBytesPerSec: rate,
    },
  };
}

/** The number at a dotted path of the figures (a latency in microseconds given in ms when `ms`). */
function lookup(figures: CompactBenchResult["figures"], dotted: string, ms: boolean): number {
  const parts = dotted.split(".");
  if (parts[0] !== "figures") throw new Error(`target path ${dotted} must start with "figures."`);
  let at: unknown = figures;
  for (const part of parts.slice(1)) at = (at as Record<string, unknown>)[part];
  if (typeof at !== "number") throw new Error(`target path ${dotted} names no number`);
  return ms ? at / 1000 : at;
}

if (isMainModule(import.meta.url)) await runAsScript("compact", runCompactBench);

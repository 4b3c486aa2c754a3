/**
 * The engine benchmark: an in-process `Store` (no NATS) with 1 KiB values, measuring append
 * throughput at 1, 64 and 256 writes in flight with fsync'd acks (and fsyncs per write), hot
 * random gets, getAll scans, kv set and get, `Store.open` time with many locations, and bytes on
 * disk per byte stored. Every figure is the median of `runs` runs; the document keeps each run's
 * value, the machine, and the targets of the issue with pass/fail.
 *
 * `npx tsx bench/engine.ts [--tiny] [--runs N] [--dir DIR] [--out FILE]` prints one JSON document
 * on stdout (progress on stderr). The test suite runs it at tiny scale so it cannot rot; the
 * numbers only mean something at full scale, on a quiet machine.
 */
import { randomBytes } from "node:crypto";
import path from "node:path";
import { warningLineLogger } from "../src/logger.js";
import { Store } from "../src/store.js";
import { checkSuiteOptions, isMainModule, runAsScript, type Scale } from "./lib/args.js";
import { diskUsage, makeTempDir, removeDir, withTempDir } from "./lib/fs.js";
import { runInFlight, runSequential } from "./lib/load.js";
import { benchHeader, judge, targetsTail, type MachineInfo, type TargetResult, type TargetSpec } from "./lib/report.js";
import {
  figure,
  latencyHistogram,
  medianLatency,
  perSecond,
  prng,
  summarize,
  type Figure,
  type LatencySummary,
} from "./lib/stats.js";

export type { Scale };
export { parseBenchArgs, parseRuns } from "./lib/args.js";

export interface EngineBenchOptions {
  scale: Scale;
  runs: number;
  /** Parent of the scratch directories (default: the OS temp dir). They are removed afterwards. */
  dir?: string;
  /** Receives one line per step; default: silent. */
  progress?: (line: string) => void;
}

const IN_FLIGHT = [1, 64, 256] as const;
type InFlight = (typeof IN_FLIGHT)[number];
type InFlightKey = `inFlight${InFlight}`;

export interface EngineBenchParams {
  valueBytes: number;
  appendMessages: Record<InFlightKey, number>;
  hotGetOps: number;
  scanPasses: number;
  kvKeys: number;
  kvSetInFlight: number;
  kvGetOps: number;
  openLocations: number;
  openBuildBatch: number;
  opensPerRun: number;
}

const PARAMS: Readonly<Record<Scale, EngineBenchParams>> = {
  tiny: {
    valueBytes: 1024,
    appendMessages: { inFlight1: 200, inFlight64: 1000, inFlight256: 2000 },
    hotGetOps: 20_000,
    scanPasses: 1,
    kvKeys: 2000,
    kvSetInFlight: 256,
    kvGetOps: 20_000,
    openLocations: 10_000,
    openBuildBatch: 4096,
    opensPerRun: 3,
  },
  full: {
    valueBytes: 1024,
    appendMessages: { inFlight1: 3000, inFlight64: 50_000, inFlight256: 100_000 },
    hotGetOps: 300_000,
    scanPasses: 3,
    kvKeys: 50_000,
    kvSetInFlight: 256,
    kvGetOps: 300_000,
    openLocations: 1_000_000,
    openBuildBatch: 4096,
    opensPerRun: 5,
  },
};

export interface AppendFigures {
  msgsPerSec: Figure;
  fsyncsPerWrite: Figure;
  /** Records per group commit (committed records / batches). */
  writesPerBatch: Figure;
  /** Median over runs of each percentile of per-append latency. */
  latency: LatencySummary;
}

export interface EngineBenchResult {
  suite: "engine";
  scale: Scale;
  runs: number;
  startedAt: string;
  elapsedSeconds: number;
  machine: MachineInfo;
  params: EngineBenchParams;
  figures: {
    append: Record<InFlightKey, AppendFigures>;
    hotGet: { opsPerSec: Figure };
    scan: { msgsPerSec: Figure };
    kvSet: { opsPerSec: Figure; fsyncsPerWrite: Figure; latency: LatencySummary };
    kvGet: { opsPerSec: Figure };
    /** Store.open of a store with `locations` locations; each run's value is the median of its opens. */
    open: { seconds: Figure; locations: number; buildSeconds: number };
    /** Allocated bytes (st_blocks * 512) under the data dir after the stream run, per value byte. */
    disk: { bytesPerByte: Figure; segmentsBytes: Figure; indexBytes: Figure; valueBytes: number };
  };
  targets: TargetResult[];
  /** Whether every target passed. */
  targetsMet: boolean;
  /** False at tiny scale, where the targets are reported but mean nothing. */
  targetsApply: boolean;
}

const TARGETS: readonly TargetSpec[] = [
  { name: "appendMsgsPerSecAt256InFlight", figure: "figures.append.inFlight256.msgsPerSec", op: ">=", threshold: 30_000, unit: "msgs/s" },
  { name: "hotGetOpsPerSec", figure: "figures.hotGet.opsPerSec", op: ">=", threshold: 100_000, unit: "ops/s" },
  { name: "scanMsgsPerSec", figure: "figures.scan.msgsPerSec", op: ">=", threshold: 300_000, unit: "msgs/s" },
  { name: "openSecondsAt1MLocations", figure: "figures.open.seconds", op: "<", threshold: 1, unit: "s" },
  { name: "diskBytesPerByte", figure: "figures.disk.bytesPerByte", op: "<=", threshold: 1.1, unit: "bytes/byte" },
];

interface StreamRun {
  append: Record<InFlightKey, { msgsPerSec: number; fsyncsPerWrite: number; writesPerBatch: number; latency: LatencySummary }>;
  hotGetOpsPerSec: number;
  scanMsgsPerSec: number;
  disk: { bytesPerByte: number; segmentsBytes: number; indexBytes: number; valueBytes: number };
}

interface KvRun {
  setOpsPerSec: number;
  setFsyncsPerWrite: number;
  setLatency: LatencySummary;
  getOpsPerSec: number;
}

function openStore(dir: string, progress: (line: string) => void): Promise<Store> {
  return Store.open({ dir, sweepTimers: false, logger: warningLineLogger((line) => progress(`store warning: ${line}`)) });
}

function streamName(n: InFlight): string {
  return `bench/append/f${n}`;
}

/** Appends at each concurrency into one fresh store, then reads the largest stream back. */
async function streamRun(p: EngineBenchParams, dir: string, value: Uint8Array, progress: (line: string) => void): Promise<StreamRun> {
  const store = await openStore(dir, progress);
  const append = {} as StreamRun["append"];
  let hotGetOpsPerSec = 0;
  let scanMsgsPerSec = 0;
  let valueBytes = 0;
  try {
    for (const n of IN_FLIGHT) {
      const key: InFlightKey = `inFlight${n}`;
      const count = p.appendMessages[key];
      const s = store.stream(streamName(n));
      const before = store.stats();
      const histogram = latencyHistogram();
      const ms = await runInFlight(n, count, () => s.append({ value }), histogram);
      const after = store.stats();
      const batches = after.batches - before.batches;
      append[key] = {
        msgsPerSec: perSecond(count, ms),
        fsyncsPerWrite: (after.fsyncs - before.fsyncs) / count,
        writesPerBatch: batches > 0 ? (after.records - before.records) / batches : 0,
        latency: summarize(histogram),
      };
      histogram.destroy();
      valueBytes += count * value.byteLength;
      progress(`append ${n} in flight: ${Math.round(append[key].msgsPerSec)} msgs/s, ${append[key].fsyncsPerWrite.toFixed(3)} fsyncs/write`);
    }
    const count = p.appendMessages.inFlight256;
    const s = store.stream(streamName(256));
    hotGetOpsPerSec = await hotGets(count, p.hotGetOps, value.byteLength, (seq) => s.get(seq));
    progress(`hot get: ${Math.round(hotGetOpsPerSec)} ops/s`);
    const started = performance.now();
    let scanned = 0;
    for (let pass = 0; pass < p.scanPasses; pass++) {
      for await (const msg of s.getAll()) {
        if (msg.value.byteLength !== value.byteLength) throw new Error(`scan read seq ${msg.seq} with ${msg.value.byteLength} bytes`);
        scanned++;
      }
    }
    scanMsgsPerSec = perSecond(scanned, performance.now() - started);
    if (scanned !== count * p.scanPasses) throw new Error(`scan saw ${scanned} messages, expected ${count * p.scanPasses}`);
    progress(`scan: ${Math.round(scanMsgsPerSec)} msgs/s`);
  } finally {
    await store.close();
  }
  const segmentsBytes = diskUsage(path.join(dir, "segments")).allocatedBytes;
  const indexBytes = diskUsage(path.join(dir, "index")).allocatedBytes;
  const total = diskUsage(dir).allocatedBytes;
  const disk = { bytesPerByte: total / valueBytes, segmentsBytes, indexBytes, valueBytes };
  progress(`disk: ${disk.bytesPerByte.toFixed(3)} bytes/byte (segments ${segmentsBytes}, index ${indexBytes})`);
  return { append, hotGetOpsPerSec, scanMsgsPerSec, disk };
}

/** Random gets of seqs 1..count, issued one after another (they complete synchronously inside). */
async function hotGets(
  count: number,
  ops: number,
  valueBytes: number,
  get: (seq: number) => Promise<{ value: Uint8Array } | undefined>,
): Promise<number> {
  const random = prng(0x5eed);
  const seqs = Uint32Array.from({ length: ops }, () => 1 + Math.floor(random() * count));
  const check = async (seq: number) => {
    const m = await get(seq);
    if (m === undefined || m.value.byteLength !== valueBytes) throw new Error(`get(${seq}) returned ${m === undefined ? "nothing" : `${m.value.byteLength} bytes`}`);
  };
  await runSequential(Math.min(ops, 2000), (i) => check(seqs[i]!)); // warm-up, not timed
  const ms = await runSequential(ops, (i) => check(seqs[i]!));
  return perSecond(ops, ms);
}

async function kvRun(p: EngineBenchParams, dir: string, value: Uint8Array, progress: (line: string) => void): Promise<KvRun> {
  const store = await openStore(dir, progress);
  try {
    const kv = store.kv("bench/kv");
    const keys = Array.from({ length: p.kvKeys }, (_, i) => `key-${i}`);
    const before = store.stats();
    const histogram = latencyHistogram();
    const setMs = await runInFlight(p.kvSetInFlight, p.kvKeys, (i) => kv.set(keys[i]!, value), histogram);
    const after = store.stats();
    const setLatency = summarize(histogram);
    histogram.destroy();
    const setOpsPerSec = perSecond(p.kvKeys, setMs);
    const random = prng(0xc0ffee);
    const picks = Uint32Array.from({ length: p.kvGetOps }, () => Math.floor(random() * p.kvKeys));
    const check = async (i: number) => {
      const e = await kv.get(keys[picks[i]!]!);
      if (e === undefined || e.value.byteLength !== value.byteLength) throw new Error(`kv get(${keys[picks[i]!]}) returned ${e === undefined ? "nothing" : "a wrong value"}`);
    };
    await runSequential(Math.min(p.kvGetOps, 2000), check); // warm-up, not timed
    const getOpsPerSec = perSecond(p.kvGetOps, await runSequential(p.kvGetOps, check));
    progress(`kv: set ${Math.round(setOpsPerSec)} ops/s, get ${Math.round(getOpsPerSec)} ops/s`);
    return { setOpsPerSec, setFsyncsPerWrite: (after.fsyncs - before.fsyncs) / p.kvKeys, setLatency, getOpsPerSec };
  } finally {
    await store.close();
  }
}

function locationName(i: number): string {
  return `open/t${i % 1024}/l${i}`;
}

/** Builds a store with `n` locations, each holding one tiny message, `batch` appends at a time. */
async function buildLocations(dir: string, n: number, batch: number, progress: (line: string) => void): Promise<number> {
  const started = performance.now();
  const store = await openStore(dir, progress);
  const tiny = new Uint8Array([42]);
  try {
    for (let start = 0; start < n; start += batch) {
      const writes: Array<Promise<unknown>> = [];
      for (let i = start; i < Math.min(n, start + batch); i++) writes.push(store.stream(locationName(i)).append({ value: tiny }));
      await Promise.all(writes);
      if ((start / batch) % 32 === 31) progress(`built ${start + batch} of ${n} locations`);
    }
  } finally {
    await store.close();
  }
  return (performance.now() - started) / 1000;
}

/** Opens (and closes) the store `opens` times; returns the median open time in seconds. */
async function openRun(dir: string, n: number, opens: number, progress: (line: string) => void): Promise<number[]> {
  const seconds: number[] = [];
  for (let k = 0; k < opens; k++) {
    const started = performance.now();
    const store = await openStore(dir, progress);
    seconds.push((performance.now() - started) / 1000);
    try {
      if (store.recovery.replayed !== 0 || store.recovery.rebuilt) throw new Error(`open replayed ${store.recovery.replayed} records; the fixture was not closed cleanly`);
      if (store.inventory(locationName(n - 1)).count !== 1) throw new Error("the last location of the fixture is missing");
    } finally {
      await store.close();
    }
  }
  return seconds;
}

function medianOf(values: number[]): number {
  return figure(values, "").median;
}

export async function runEngineBench(opts: EngineBenchOptions): Promise<EngineBenchResult> {
  checkSuiteOptions(opts);
  const p = PARAMS[opts.scale];
  const progress = opts.progress ?? (() => undefined);
  const startedAt = new Date();
  const started = performance.now();
  const value = randomBytes(p.valueBytes);
  const streamRuns: StreamRun[] = [];
  const kvRuns: KvRun[] = [];
  const openRuns: number[] = [];
  // The open fixture is built once and reused by every run: building it dominates otherwise.
  const openDir = makeTempDir("strata-bench-open", opts.dir);
  try {
    progress(`building ${p.openLocations} locations`);
    const buildSeconds = await buildLocations(openDir, p.openLocations, p.openBuildBatch, progress);
    progress(`built in ${buildSeconds.toFixed(1)} s`);
    for (let run = 1; run <= opts.runs; run++) {
      progress(`run ${run} of ${opts.runs}`);
      streamRuns.push(await withTempDir("strata-bench-stream", opts.dir, (dir) => streamRun(p, dir, value, progress)));
      kvRuns.push(await withTempDir("strata-bench-kv", opts.dir, (dir) => kvRun(p, dir, value, progress)));
      const opens = await openRun(openDir, p.openLocations, p.opensPerRun, progress);
      openRuns.push(medianOf(opens));
      progress(`open of ${p.openLocations} locations: ${opens.map((s) => (s * 1000).toFixed(1)).join(", ")} ms`);
    }
    const figures = collect(p, streamRuns, kvRuns, openRuns, buildSeconds);
    const targets = TARGETS.map((t) => judge(t, lookup(figures, t.figure)));
    return {
      ...benchHeader("engine", opts, startedAt, started),
      params: p,
      figures,
      ...targetsTail(targets, opts.scale),
    };
  } finally {
    removeDir(openDir);
  }
}

function collect(p: EngineBenchParams, streams: StreamRun[], kvs: KvRun[], opens: number[], buildSeconds: number): EngineBenchResult["figures"] {
  const append = {} as Record<InFlightKey, AppendFigures>;
  for (const n of IN_FLIGHT) {
    const key: InFlightKey = `inFlight${n}`;
    const runs = streams.map((s) => s.append[key]);
    append[key] = {
      msgsPerSec: figure(runs.map((r) => r.msgsPerSec), "msgs/s"),
      fsyncsPerWrite: figure(runs.map((r) => r.fsyncsPerWrite), "fsyncs/write"),
      writesPerBatch: figure(runs.map((r) => r.writesPerBatch), "writes/batch"),
      latency: medianLatency(runs.map((r) => r.latency)),
    };
  }
  return {
    append,
    hotGet: { opsPerSec: figure(streams.map((s) => s.hotGetOpsPerSec), "ops/s") },
    scan: { msgsPerSec: figure(streams.map((s) => s.scanMsgsPerSec), "msgs/s") },
    kvSet: {
      opsPerSec: figure(kvs.map((k) => k.setOpsPerSec), "ops/s"),
      fsyncsPerWrite: figure(kvs.map((k) => k.setFsyncsPerWrite), "fsyncs/write"),
      latency: medianLatency(kvs.map((k) => k.setLatency)),
    },
    kvGet: { opsPerSec: figure(kvs.map((k) => k.getOpsPerSec), "ops/s") },
    open: { seconds: figure(opens, "s"), locations: p.openLocations, buildSeconds: Number(buildSeconds.toFixed(1)) },
    disk: {
      bytesPerByte: figure(streams.map((s) => s.disk.bytesPerByte), "bytes/byte"),
      segmentsBytes: figure(streams.map((s) => s.disk.segmentsBytes), "bytes", 15),
      indexBytes: figure(streams.map((s) => s.disk.indexBytes), "bytes", 15),
      valueBytes: streams[0]!.disk.valueBytes,
    },
  };
}

/** The median of the figure at a dotted path such as "figures.scan.msgsPerSec". */
function lookup(figures: EngineBenchResult["figures"], dotted: string): number {
  const parts = dotted.split(".");
  if (parts[0] !== "figures") throw new Error(`target path ${dotted} must start with "figures."`);
  let at: unknown = figures;
  for (const part of parts.slice(1)) at = (at as Record<string, unknown>)[part];
  const fig = at as Figure | undefined;
  if (fig === undefined || typeof fig.median !== "number") throw new Error(`target path ${dotted} names no figure`);
  return fig.median;
}

if (isMainModule(import.meta.url)) await runAsScript("engine", runEngineBench);

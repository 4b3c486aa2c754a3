/**
 * The workloads of the net benchmark, written once against `BenchSystem` so that Strata and
 * JetStream run exactly the same code: appends of 100 B / 1 KiB / 4 KiB at 1 and 256 in flight,
 * Strata's appendMany, reading a stream back, random gets by seq, kv puts and gets, one 8 MiB
 * message, and paced open-loop loads of 4 KiB and of 100 B messages at 10 Mbit/s. Each function returns the
 * figures of one run; bench/net.ts takes medians over runs.
 */
import { randomBytes } from "node:crypto";
import type { Scale } from "./lib/args.js";
import { runInFlight, runSequential } from "./lib/load.js";
import type { LagProbe, ProbeLag } from "./lib/lag-probe.js";
import { latencyHistogram, perSecond, prng } from "./lib/stats.js";
import { CpuMeter, runPaced, tailLatency, type CpuPerOp, type TailLatency } from "./net-load.js";
import type { BenchKv, BenchStream, BenchSystem, EchoSystem } from "./net-systems.js";

const KiB = 1024;
const MiB = 1024 * KiB;

export const APPEND_KEYS = ["inFlight1_1KiB", "inFlight256_1KiB", "inFlight256_100B", "inFlight256_4KiB"] as const;
export type AppendKey = (typeof APPEND_KEYS)[number];

const APPEND_SHAPES: Readonly<Record<AppendKey, { inFlight: number; valueBytes: number }>> = {
  inFlight1_1KiB: { inFlight: 1, valueBytes: KiB },
  inFlight256_1KiB: { inFlight: 256, valueBytes: KiB },
  inFlight256_100B: { inFlight: 256, valueBytes: 100 },
  inFlight256_4KiB: { inFlight: 256, valueBytes: 4 * KiB },
};

export interface NetBenchParams {
  /** Messages per append workload. */
  appendMessages: Record<AppendKey, number>;
  /** Strata's appendMany: messages in all, per request, requests in flight (1 KiB each). */
  appendMany: { messages: number; batch: number; inFlight: number };
  /** Random gets of the 1 KiB stream written at 256 in flight, at 1 and at 64 in flight. */
  getOps: { inFlight1: number; inFlight64: number };
  /** KV: keys put (1 KiB values) at `putInFlight`, then random gets at 1 and 64 in flight. */
  kv: { keys: number; putInFlight: number; getOps: { inFlight1: number; inFlight64: number } };
  /** Appends (then a get) of one message of `bytes`. */
  large: { bytes: number; count: number };
  /** Open-loop 4 KiB appends at `bitsPerSec` of payload for `seconds`. */
  paced: { valueBytes: number; bitsPerSec: number; seconds: number };
  /** The same open-loop load with 100 B messages (12,500 msgs/s at 10 Mbit/s): many small fsync'd batches. */
  pacedSmall: { valueBytes: number; bitsPerSec: number; seconds: number };
  /**
   * Untimed appends and kv puts (at 256 in flight, as measured), gets and kv gets before each
   * system's run, so that what is measured is the steady state: both clients and the strata
   * server are JIT-compiled code, hot only after some thousands of operations.
   */
  warmupOps: number;
  /** Core NATS echo requests of 1 KiB at 1 and at 256 in flight. */
  echo: { inFlight1: number; inFlight256: number; payloadBytes: number };
  /**
   * New locations: `locations` of them, `inFlight` at once, each created (Strata: its first append,
   * located through the coordinator; JetStream: a stream added) and then given `msgs` 1 KiB
   * appends one after another; `warmup` untimed ones first.
   */
  newLocations: { locations: number; msgs: number; inFlight: number; warmup: number };
}

export const PARAMS: Readonly<Record<Scale, NetBenchParams>> = {
  tiny: {
    appendMessages: { inFlight1_1KiB: 50, inFlight256_1KiB: 1000, inFlight256_100B: 1000, inFlight256_4KiB: 500 },
    appendMany: { messages: 1000, batch: 100, inFlight: 4 },
    getOps: { inFlight1: 100, inFlight64: 500 },
    kv: { keys: 500, putInFlight: 256, getOps: { inFlight1: 100, inFlight64: 500 } },
    large: { bytes: 8 * MiB, count: 1 },
    paced: { valueBytes: 4 * KiB, bitsPerSec: 10_000_000, seconds: 0.3 },
    pacedSmall: { valueBytes: 100, bitsPerSec: 10_000_000, seconds: 0.3 },
    warmupOps: 200,
    echo: { inFlight1: 100, inFlight256: 1000, payloadBytes: KiB },
    newLocations: { locations: 100, msgs: 5, inFlight: 16, warmup: 10 },
  },
  full: {
    appendMessages: { inFlight1_1KiB: 2000, inFlight256_1KiB: 50_000, inFlight256_100B: 50_000, inFlight256_4KiB: 20_000 },
    appendMany: { messages: 50_000, batch: 100, inFlight: 8 },
    getOps: { inFlight1: 5000, inFlight64: 20_000 },
    kv: { keys: 50_000, putInFlight: 256, getOps: { inFlight1: 5000, inFlight64: 20_000 } },
    large: { bytes: 8 * MiB, count: 3 },
    paced: { valueBytes: 4 * KiB, bitsPerSec: 10_000_000, seconds: 20 },
    pacedSmall: { valueBytes: 100, bitsPerSec: 10_000_000, seconds: 10 },
    warmupOps: 20_000,
    echo: { inFlight1: 5000, inFlight256: 50_000, payloadBytes: KiB },
    newLocations: { locations: 2000, msgs: 5, inFlight: 64, warmup: 2000 },
  },
};

export interface ThroughputRun {
  opsPerSec: number;
  /** Payload bytes per second, in MB (10^6 bytes). */
  mbPerSec: number;
  latency: TailLatency;
  /** CPU µs per operation of each process (client, strataServer, natsServer), where measured. */
  cpuUsPerOp: CpuPerOp;
}

export type LargeRun =
  | { accepted: true; appendMbPerSec: number; getMbPerSec: number }
  | { accepted: false; error: string };

export interface SystemRun {
  append: Record<AppendKey, ThroughputRun>;
  /** Strata only: opsPerSec counts messages, latency is per request of `batch` messages. */
  appendMany?: ThroughputRun;
  readAll: { msgsPerSec: number };
  get: { inFlight1: ThroughputRun; inFlight64: ThroughputRun };
  kvPut: ThroughputRun;
  kvGet: { inFlight1: ThroughputRun; inFlight64: ThroughputRun };
  large: LargeRun;
  paced: PacedRun;
  /** The paced load with 100 B messages (params.pacedSmall). */
  pacedSmall: PacedRun;
  /** opsPerSec = new locations per second; cpuUsPerOp per new location (its `msgs` appends included). */
  newLocations?: ThroughputRun;
  /** Seconds the new locations took in all. */
  newLocationsSeconds?: number;
  /** Strata only: the 1 KiB append at 256 in flight, located through a coordinator (lease-checked admission). */
  coordinatedAppend?: ThroughputRun;
}

export interface EchoRun {
  request: { inFlight1: ThroughputRun; inFlight256: ThroughputRun };
  mux: { inFlight1: ThroughputRun; inFlight256: ThroughputRun };
}

type Progress = (line: string) => void;

/** Times `count` operations at `inFlight`, with per-op latency and the CPU of every process. */
async function measure(
  pids: Readonly<Record<string, number | undefined>>,
  inFlight: number,
  count: number,
  bytesPerOp: number,
  op: (i: number) => Promise<unknown>,
): Promise<ThroughputRun> {
  const histogram = latencyHistogram();
  const cpu = new CpuMeter(pids);
  try {
    cpu.start();
    const ms = await runInFlight(inFlight, count, op, histogram);
    const cpuUsPerOp = cpu.stop(count);
    const opsPerSec = perSecond(count, ms);
    return { opsPerSec, mbPerSec: (opsPerSec * bytesPerOp) / 1e6, latency: tailLatency(histogram), cpuUsPerOp };
  } finally {
    histogram.destroy();
  }
}

function randomSeqs(count: number, max: number, seed: number): Uint32Array {
  const random = prng(seed);
  return Uint32Array.from({ length: count }, () => 1 + Math.floor(random() * max));
}

async function checkedGet(s: BenchStream, seq: number, valueBytes: number): Promise<void> {
  const value = await s.get(seq);
  if (value?.byteLength !== valueBytes) throw new Error(`get(${seq}) returned ${value === undefined ? "nothing" : `${value.byteLength} bytes`}`);
}

async function checkedKvGet(kv: BenchKv, key: string, valueBytes: number): Promise<void> {
  const value = await kv.get(key);
  if (value?.byteLength !== valueBytes) throw new Error(`kv get(${key}) returned ${value === undefined ? "nothing" : `${value.byteLength} bytes`}`);
}

/** Reads of the whole warm-up stream before the measured read back (see runSystem). */
const READ_WARMUP_PASSES = 3;
/** Appends, gets and kv gets one at a time before the measured ones (at most warmupOps). */
const LONE_WARMUP_OPS = 3000;

/** Runs every workload once against `system`. */
export async function runSystem(system: BenchSystem, p: NetBenchParams, progress: Progress, probe?: LagProbe): Promise<SystemRun> {
  const say = (line: string) => progress(`${system.name}: ${line}`);
  const pids = { ...system.pids };
  const values = new Map<number, Uint8Array>();
  const valueOf = (bytes: number) => values.get(bytes) ?? values.set(bytes, randomBytes(bytes)).get(bytes)!;
  const kib = valueOf(KiB);

  const warm = await system.stream("warmup");
  await runInFlight(256, p.warmupOps, () => warm.append(kib));
  await runInFlight(16, p.warmupOps, (i) => checkedGet(warm, 1 + (i % p.warmupOps), KiB));
  // One at a time too: a lone request takes other code than coalesced ones, in the client and the
  // server, and a fresh process's first 3,000 lone appends took up to twice as long as later ones.
  const lone = Math.min(p.warmupOps, LONE_WARMUP_OPS);
  await runSequential(lone, () => warm.append(kib));
  await runSequential(lone, (i) => checkedGet(warm, 1 + (i % p.warmupOps), KiB));
  // The streamed read too (read back): its per-batch code runs a few hundred times per pass, so a
  // fresh process reads its first 100,000 messages at a third of its steady rate (JIT tiers, TCP
  // windows); each system gets the same passes.
  for (let pass = 0; pass < READ_WARMUP_PASSES; pass++) await warm.readAll(p.warmupOps + lone, KiB);
  const warmKv = await system.kv("warmup_kv");
  await runInFlight(256, p.warmupOps, (i) => warmKv.put(`w-${i}`, kib));
  await runInFlight(16, p.warmupOps, (i) => checkedKvGet(warmKv, `w-${i}`, KiB));
  await runSequential(lone, (i) => checkedKvGet(warmKv, `w-${i}`, KiB));

  const append = {} as Record<AppendKey, ThroughputRun>;
  const streams = {} as Record<AppendKey, BenchStream>;
  for (const key of APPEND_KEYS) {
    const { inFlight, valueBytes } = APPEND_SHAPES[key];
    const s = await system.stream(`a_${key}`);
    streams[key] = s;
    const value = valueOf(valueBytes);
    append[key] = await measure(pids, inFlight, p.appendMessages[key], valueBytes, () => s.append(value));
    say(`append ${key}: ${Math.round(append[key].opsPerSec)} msgs/s, p99.9 ${append[key].latency.p999} us`);
  }

  let appendMany: ThroughputRun | undefined;
  const many = await system.stream("many_1KiB");
  if (many.appendMany) {
    const { messages, batch, inFlight } = p.appendMany;
    const requests = Math.ceil(messages / batch);
    const batchValues = Array.from({ length: batch }, () => kib);
    const run = await measure(pids, inFlight, requests, batch * KiB, () => many.appendMany!(batchValues));
    appendMany = { ...run, opsPerSec: run.opsPerSec * batch, cpuUsPerOp: perMessage(run.cpuUsPerOp, batch) };
    say(`appendMany: ${Math.round(appendMany.opsPerSec)} msgs/s`);
  }

  const count = p.appendMessages.inFlight256_1KiB;
  const source = streams.inFlight256_1KiB;
  const readStarted = performance.now();
  await source.readAll(count, KiB);
  const readAll = { msgsPerSec: perSecond(count, performance.now() - readStarted) };
  say(`read back ${count}: ${Math.round(readAll.msgsPerSec)} msgs/s`);

  const get = {
    inFlight1: await gets(pids, source, 1, p.getOps.inFlight1, count, 0x5eed),
    inFlight64: await gets(pids, source, 64, p.getOps.inFlight64, count, 0xbeef),
  };
  say(`get: ${Math.round(get.inFlight1.opsPerSec)} ops/s at 1, ${Math.round(get.inFlight64.opsPerSec)} ops/s at 64 in flight`);

  const { kvPut, kvGet } = await kvWorkloads(system, pids, p, kib);
  say(`kv: put ${Math.round(kvPut.opsPerSec)} ops/s, get ${Math.round(kvGet.inFlight64.opsPerSec)} ops/s at 64 in flight`);

  const large = await largeMessage(system, p.large.bytes, p.large.count);
  say(`${p.large.bytes} B message: ${large.accepted ? `${large.appendMbPerSec.toFixed(1)} MB/s append` : `rejected (${large.error})`}`);

  const paced = await pacedLoad(system, p.paced, valueOf(p.paced.valueBytes), "paced_4KiB", probe);
  say(`paced ${paced.msgsPerSec.toFixed(0)} msgs/s: ack p99.9 ${paced.latency.p999} us`);
  const pacedSmall = await pacedLoad(system, p.pacedSmall, valueOf(p.pacedSmall.valueBytes), "paced_100B", probe);
  say(`paced ${pacedSmall.msgsPerSec.toFixed(0)} msgs/s of ${p.pacedSmall.valueBytes} B: ack p99.9 ${pacedSmall.latency.p999} us`);

  return { append, ...(appendMany ? { appendMany } : {}), readAll, get, kvPut, kvGet, large, paced, pacedSmall };
}

function perMessage(cpu: CpuPerOp, batch: number): CpuPerOp {
  return Object.fromEntries(Object.entries(cpu).map(([k, v]) => [k, v / batch]));
}

function gets(
  pids: Readonly<Record<string, number | undefined>>,
  s: BenchStream,
  inFlight: number,
  ops: number,
  maxSeq: number,
  seed: number,
): Promise<ThroughputRun> {
  const seqs = randomSeqs(ops, maxSeq, seed);
  return measure(pids, inFlight, ops, KiB, (i) => checkedGet(s, seqs[i]!, KiB));
}

async function kvWorkloads(
  system: BenchSystem,
  pids: Readonly<Record<string, number | undefined>>,
  p: NetBenchParams,
  value: Uint8Array,
): Promise<{ kvPut: ThroughputRun; kvGet: SystemRun["kvGet"] }> {
  const kv = await system.kv("kv_1KiB");
  const keys = Array.from({ length: p.kv.keys }, (_, i) => `key-${i}`);
  const kvPut = await measure(pids, p.kv.putInFlight, p.kv.keys, value.byteLength, (i) => kv.put(keys[i]!, value));
  const kvGetAt = (inFlight: number, ops: number, seed: number) => {
    const picks = randomSeqs(ops, p.kv.keys, seed);
    return measure(pids, inFlight, ops, value.byteLength, (i) => checkedKvGet(kv, keys[picks[i]! - 1]!, value.byteLength));
  };
  const kvGet = { inFlight1: await kvGetAt(1, p.kv.getOps.inFlight1, 0xc0ffee), inFlight64: await kvGetAt(64, p.kv.getOps.inFlight64, 0xfeed) };
  return { kvPut, kvGet };
}

/** Appends `count` messages of `bytes` one after another, then gets the last back. */
async function largeMessage(system: BenchSystem, bytes: number, count: number): Promise<LargeRun> {
  const s = await system.stream("large");
  const value = randomBytes(bytes);
  const started = performance.now();
  try {
    for (let i = 0; i < count; i++) await s.append(value);
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    const message = (err as Error)?.message ?? String(err);
    const error = typeof code === "string" && !message.includes(code) ? `${code}: ${message}` : message;
    return { accepted: false, error: error.slice(0, 300) };
  }
  const appendMs = performance.now() - started;
  const getStarted = performance.now();
  const back = await s.get(count);
  const getMs = performance.now() - getStarted;
  if (back === undefined || Buffer.compare(back, value) !== 0) {
    throw new Error(`${system.name}: the ${bytes} B message came back ${back === undefined ? "missing" : "different"}`);
  }
  return { accepted: true, appendMbPerSec: (count * bytes) / 1e3 / appendMs, getMbPerSec: bytes / 1e3 / getMs };
}

export interface PacedRun {
  latency: TailLatency;
  msgsPerSec: number;
  /** How late this process's sender got behind its schedule at worst. */
  sendLagMsMax: number;
  /** The machine's own stalls meanwhile: how late an idle probe process's timers fired (./lib/lag-probe.ts). */
  machineLag?: ProbeLag;
}

/**
 * An open-loop load of `value` at `shape.bitsPerSec` of payload for `shape.seconds`, on stream
 * `name`, with the lag probe's window open around it when there is one.
 */
export async function pacedLoad(system: BenchSystem, shape: NetBenchParams["paced"], value: Uint8Array, name: string, probe?: LagProbe): Promise<PacedRun> {
  const s = await system.stream(name);
  const rate = shape.bitsPerSec / 8 / shape.valueBytes;
  const total = Math.max(1, Math.round(rate * shape.seconds));
  const histogram = latencyHistogram();
  try {
    const load = () => runPaced(rate, total, () => s.append(value), histogram);
    const { value: result, lag } = probe ? await probe.during(load) : { value: await load(), lag: undefined };
    return { latency: tailLatency(histogram), msgsPerSec: perSecond(result.messages, result.elapsedMs), sendLagMsMax: result.sendLagMsMax, ...(lag ? { machineLag: lag } : {}) };
  } finally {
    histogram.destroy();
  }
}

/** The request/reply ceiling: echo requests through nats.js `request()` and through a bare inbox mux. */
export async function runEcho(echo: EchoSystem, p: NetBenchParams, progress: Progress): Promise<EchoRun> {
  const payload = randomBytes(p.echo.payloadBytes);
  const bytes = p.echo.payloadBytes;
  await runInFlight(64, p.warmupOps, () => echo.request(payload));
  await runInFlight(64, p.warmupOps, () => echo.muxRequest(payload));
  const out: EchoRun = {
    request: {
      inFlight1: await measure(echo.pids, 1, p.echo.inFlight1, bytes, () => echo.request(payload)),
      inFlight256: await measure(echo.pids, 256, p.echo.inFlight256, bytes, () => echo.request(payload)),
    },
    mux: {
      inFlight1: await measure(echo.pids, 1, p.echo.inFlight1, bytes, () => echo.muxRequest(payload)),
      inFlight256: await measure(echo.pids, 256, p.echo.inFlight256, bytes, () => echo.muxRequest(payload)),
    },
  };
  progress(`echo: nc.request ${Math.round(out.request.inFlight256.opsPerSec)} /s, mux ${Math.round(out.mux.inFlight256.opsPerSec)} /s at 256 in flight`);
  return out;
}

/**
 * The coordinated workloads (bench/net.ts runs them on a second system of each kind): new
 * locations × `msgs` appends, and, with `append`, the 1 KiB append at 256 in flight through the
 * coordinator's placement and the server's lease-checked admission.
 */
export async function runNewLocations(system: BenchSystem, p: NetBenchParams, progress: Progress, append: boolean): Promise<Pick<SystemRun, "newLocations" | "newLocationsSeconds" | "coordinatedAppend">> {
  const say = (line: string) => progress(`${system.name}: ${line}`);
  const pids = { ...system.pids };
  const kib = randomBytes(KiB);
  const { locations, msgs, inFlight, warmup } = p.newLocations;
  const create = async (name: string) => {
    const s = await system.stream(name);
    for (let k = 0; k < msgs; k++) await s.append(kib);
  };
  // The warm-up JIT-compiles the path of a new location in every process (the coordinator's
  // included: a few hundred are not enough); JetStream then deletes its warm-up streams, so it
  // measures from as few streams as it started with.
  await runInFlight(inFlight, warmup, (i) => create(`nlw_${i}`));
  await system.discard?.(Array.from({ length: warmup }, (_, i) => `nlw_${i}`));
  const newLocations = await measure(pids, inFlight, locations, msgs * KiB, (i) => create(`nl_${i}`));
  const newLocationsSeconds = locations / newLocations.opsPerSec;
  say(`${locations} new locations x ${msgs} msgs: ${newLocationsSeconds.toFixed(2)} s, coordinator ${newLocations.cpuUsPerOp.coordinator?.toFixed(0) ?? "-"} us CPU per location`);
  if (!append) return { newLocations, newLocationsSeconds };
  const warm = await system.stream("coord_warmup");
  await runInFlight(256, p.warmupOps, () => warm.append(kib));
  const s = await system.stream("a_coord_inFlight256_1KiB");
  const coordinatedAppend = await measure(pids, 256, p.appendMessages.inFlight256_1KiB, KiB, () => s.append(kib));
  say(`append inFlight256_1KiB through the coordinator: ${Math.round(coordinatedAppend.opsPerSec)} msgs/s`);
  return { newLocations, newLocationsSeconds, coordinatedAppend };
}

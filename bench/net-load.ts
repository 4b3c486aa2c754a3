/**
 * Load shapes and measurements the net benchmark adds to bench/lib: an open-loop paced load
 * (sends on a fixed schedule whatever the acks do, and times each ack from the moment its send
 * was *due*, so a stall is charged to every message it delays rather than hidden by the sender
 * waiting: no coordinated omission), tail latencies down to p99.9, and the CPU time each process
 * of a run spent per operation (the client here, the strata server child, nats-server).
 */
import fs from "node:fs";
import type { Histogram } from "hdr-histogram-js";
import { median, recordMs } from "./lib/stats.js";

/** Latency percentiles of one workload, in microseconds. */
export interface TailLatency {
  p50: number;
  p99: number;
  p999: number;
  max: number;
  unit: "us";
}

export function tailLatency(histogram: Histogram): TailLatency {
  // A percentile is reported as the top of its histogram bucket, which can lie just above the
  // largest value recorded; the recorded maximum is the truer figure then.
  const max = histogram.maxValue;
  const at = (percentile: number) => Math.min(histogram.getValueAtPercentile(percentile), max);
  return { p50: at(50), p99: at(99), p999: at(99.9), max, unit: "us" };
}

/** The median over runs of each percentile. */
export function medianTail(runs: readonly TailLatency[]): TailLatency {
  const pick = (k: "p50" | "p99" | "p999" | "max") => median(runs.map((r) => r[k]));
  return { p50: pick("p50"), p99: pick("p99"), p999: pick("p999"), max: pick("max"), unit: "us" };
}

export interface PacedResult {
  /** Messages sent (all acknowledged). */
  messages: number;
  /** From the first due time to the last ack. */
  elapsedMs: number;
  /** How late the sender got behind its schedule at worst (timer granularity, a busy event loop). */
  sendLagMsMax: number;
}

/**
 * Sends `total` operations at `ratePerSec`, open loop: operation i is due at start + i / rate and
 * is started then (or as soon as the event loop gets there), never waiting for earlier acks. Each
 * ack's latency, measured from its due time, goes into `latencies`. Rejects with the first failure
 * once every operation has settled.
 */
export async function runPaced(
  ratePerSec: number,
  total: number,
  op: (i: number) => Promise<unknown>,
  latencies: Histogram,
): Promise<PacedResult> {
  const intervalMs = 1000 / ratePerSec;
  const start = performance.now() + 5;
  // Counts what is outstanding instead of keeping every operation's promise: a paced run of
  // 125,000 messages would otherwise hold them all, and the load generator's own garbage
  // collection (scavenges of survivors) would land in the latencies it measures.
  let outstanding = 0;
  let failure: { reason: unknown } | undefined;
  let allSent = false;
  let finish: () => void = () => undefined;
  const finished = new Promise<void>((resolve) => (finish = resolve));
  const done = () => {
    outstanding -= 1;
    if (allSent && outstanding === 0) finish();
  };
  let lagMax = 0;
  let last = start;
  for (let i = 0; i < total; i++) {
    const due = start + i * intervalMs;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    lagMax = Math.max(lagMax, performance.now() - due);
    outstanding += 1;
    op(i).then(
      () => {
        const now = performance.now();
        recordMs(latencies, now - due);
        last = Math.max(last, now);
        done();
      },
      (reason: unknown) => {
        failure ??= { reason };
        done();
      },
    );
  }
  allSent = true;
  if (outstanding > 0) await finished;
  if (failure) throw failure.reason;
  return { messages: total, elapsedMs: last - start, sendLagMsMax: lagMax };
}

/** Linux reports process times in clock ticks of USER_HZ, which is 100 on every common platform. */
const USER_HZ = 100;

/** CPU seconds (user + system) a process has used so far, or undefined where /proc cannot tell. */
export function processCpuSeconds(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may contain spaces; fields after its ")" are space-separated.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    return Number.isFinite(utime) && Number.isFinite(stime) ? (utime + stime) / USER_HZ : undefined;
  } catch {
    return undefined;
  }
}

/** CPU microseconds per operation of each process, over one measured workload. */
export type CpuPerOp = Record<string, number>;

/**
 * Measures the CPU the benchmark process and the given other processes use between `start()`
 * and `stop(ops)`. Processes whose time cannot be read are left out of the result.
 */
export class CpuMeter {
  private client = process.cpuUsage();
  private others = new Map<string, number | undefined>();

  constructor(private readonly pids: Readonly<Record<string, number | undefined>>) {}

  start(): void {
    this.client = process.cpuUsage();
    for (const [name, pid] of Object.entries(this.pids)) this.others.set(name, pid === undefined ? undefined : processCpuSeconds(pid));
  }

  stop(ops: number): CpuPerOp {
    const used = process.cpuUsage(this.client);
    const out: CpuPerOp = { client: (used.user + used.system) / ops };
    for (const [name, pid] of Object.entries(this.pids)) {
      const before = this.others.get(name);
      const after = pid === undefined ? undefined : processCpuSeconds(pid);
      if (before !== undefined && after !== undefined) out[name] = ((after - before) * 1e6) / ops;
    }
    return out;
  }
}

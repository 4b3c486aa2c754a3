/**
 * Statistics for benchmarks: medians of repeated runs and latency percentiles.
 *
 * A figure is always reported as the median of its runs together with every run's value, so a
 * reader of the JSON can see how noisy the machine was. Latencies go into an HDR histogram
 * (hdr-histogram-js) in microseconds, which keeps memory constant however many operations run.
 */
import { build, type Histogram } from "hdr-histogram-js";
import { mulberry32 as prng } from "../../src/random.js";
export { prng };

/** One reported number: the median of its runs, each run's value, and its unit. */
export interface Figure {
  median: number;
  runs: number[];
  unit: string;
}

export interface LatencySummary {
  p50: number;
  p90: number;
  p99: number;
  max: number;
  unit: "us";
}

/** Highest latency the histograms track: 10 minutes in microseconds. */
const LATENCY_US_MAX = 600_000_000;

export function median(values: readonly number[]): number {
  if (values.length === 0) throw new Error("median of no values");
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Rounds to `digits` significant digits so the JSON stays readable. */
export function round(value: number, digits = 4): number {
  if (!Number.isFinite(value) || value === 0) return value;
  return Number(value.toPrecision(digits));
}

/** A figure rounded to `digits` significant digits (counts of bytes should pass enough to stay exact). */
export function figure(runs: readonly number[], unit: string, digits = 4): Figure {
  return { median: round(median(runs), digits), runs: runs.map((v) => round(v, digits)), unit };
}

/** Operations per second for `count` operations that took `ms` milliseconds. */
export function perSecond(count: number, ms: number): number {
  return ms > 0 ? (count * 1000) / ms : Number.POSITIVE_INFINITY;
}

export function latencyHistogram(): Histogram {
  return build({ lowestDiscernibleValue: 1, highestTrackableValue: LATENCY_US_MAX, numberOfSignificantValueDigits: 3 });
}

/** Records a latency given in milliseconds (as from `performance.now()` differences). */
export function recordMs(histogram: Histogram, ms: number): void {
  histogram.recordValue(Math.min(LATENCY_US_MAX, Math.max(1, Math.round(ms * 1000))));
}

export function summarize(histogram: Histogram): LatencySummary {
  return {
    p50: histogram.getValueAtPercentile(50),
    p90: histogram.getValueAtPercentile(90),
    p99: histogram.getValueAtPercentile(99),
    max: histogram.maxValue,
    unit: "us",
  };
}

/** The median of each percentile over runs (one summary per run). */
export function medianLatency(runs: readonly LatencySummary[]): LatencySummary {
  const pick = (k: "p50" | "p90" | "p99" | "max") => median(runs.map((r) => r[k]));
  return { p50: pick("p50"), p90: pick("p90"), p99: pick("p99"), max: pick("max"), unit: "us" };
}


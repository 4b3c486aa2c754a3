/**
 * The Prometheus registry of one process part (a server, a coordinator): `Metrics` owns a
 * prom-client `Registry` of its own — never prom-client's global default registry, since tests
 * run several servers in one process — and the parts (./store-metrics.ts, ./server-metrics.ts,
 * ./coordinator-metrics.ts) register their metrics into it when they are given one. With no
 * `Metrics` a part records nothing: its hooks are `undefined` and each call site costs one check.
 *
 * Conventions kept by every metric here: the `strata_` prefix; counters end `_total`, durations
 * are in seconds and end `_seconds`, sizes end `_bytes` (`_bytes_total` for a counter of bytes);
 * label values come only from small fixed sets (kind, op, ack level, error code), never a
 * location, key or server-chosen string, so the number of series is bounded. The default process
 * metrics (`collectDefaultMetrics`) keep their standard names (`process_…`, `nodejs_…`), which
 * the usual Node.js dashboards expect.
 *
 * Hot path: label children are bound once at construction (./hot.ts: a plain field per label
 * set, as prom-client's own children hash their labels on every call) and the hot path only calls
 * `inc`/`observe` on them; values that already exist as counters or state (uploads, queue depth,
 * locations) are read at scrape time instead (`collect`).
 */
import { collectDefaultMetrics, Counter, Gauge, Registry } from "prom-client";
import { ERROR_CODES, StrataError, type ErrorCode } from "../errors.js";
import { HotCounter, HotHistogram, type HotCounterChild } from "./hot.js";

export interface MetricsOptions {
  /** Also collect the default process metrics (CPU, memory, event loop lag, GC) under their standard names. Default false. */
  processMetrics?: boolean;
}

export class Metrics {
  readonly registry = new Registry();

  constructor(options: MetricsOptions = {}) {
    if (options.processMetrics === true) collectDefaultMetrics({ register: this.registry });
  }

  /** The text exposition of every metric (collect-time values read now). */
  text(): Promise<string> {
    return this.registry.metrics();
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}

/** Buckets of latencies from 50 µs to 10 s (fsyncs, acks, uploads, fault-ins). */
export const LATENCY_BUCKETS_SECONDS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Buckets of counts in powers of two (group-commit batch sizes). */
export const COUNT_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096];

/**
 * A counter whose value is kept elsewhere (a part's own stats), read at scrape time: the hot
 * path pays nothing. `read` must be monotonic; a decrease (never expected) is ignored.
 */
export function counterFrom(registry: Registry, name: string, help: string, read: () => number): Counter {
  let seen = 0;
  return new Counter({
    name,
    help,
    registers: [registry],
    collect() {
      const now = read();
      if (now > seen) this.inc(now - seen);
      seen = Math.max(seen, now);
    },
  });
}

/** A gauge read at scrape time. */
export function gaugeFrom(registry: Registry, name: string, help: string, read: () => number): Gauge {
  return new Gauge({
    name,
    help,
    registers: [registry],
    collect() {
      this.set(read());
    },
  });
}

export function histogram(registry: Registry, name: string, help: string, buckets: number[], labelNames: string[] = []): HotHistogram {
  return new HotHistogram(registry, name, help, buckets, labelNames);
}

/** Errors by code: one pre-bound child per code of errors.ts; anything else counts as INTERNAL. */
export class ErrorCounter {
  private readonly children: Map<string, HotCounterChild>;

  constructor(registry: Registry, name: string, help: string) {
    const counter = new HotCounter(registry, name, help, ["code"]);
    this.children = new Map(ERROR_CODES.map((code) => [code, counter.child(code)]));
  }

  /** Counts one error of `code` (a code not of errors.ts counts as INTERNAL). */
  countCode(code: string): void {
    (this.children.get(code) ?? this.children.get("INTERNAL")!).inc();
  }

  /** Counts `err` by its code (a StrataError's, else INTERNAL: an unexpected throw). */
  count(err: unknown): void {
    const code: ErrorCode = err instanceof StrataError ? err.code : "INTERNAL";
    (this.children.get(code) ?? this.children.get("INTERNAL")!).inc();
  }
}

/** Seconds since a `performance.now()` timestamp. */
export function secondsSince(startMs: number): number {
  return (performance.now() - startMs) / 1000;
}

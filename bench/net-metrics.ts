/**
 * The cost of metrics on the hot path (issue #12): the net bench's 1 KiB append at 256 and at 1
 * in flight against a strata server child (fsync "always") with no metrics at all, and against one
 * that records metrics (`--metrics-port`, process metrics included) while a scraper in this process
 * fetches its /metrics every second, as Prometheus would. Each run measures both, in alternating
 * order, on fresh servers and data directories; the figures are medians of the runs, and
 * `ratio` = with scraper / without (opsPerSec: below 1 is a cost; latency: above 1 is a cost).
 * The scraper's fetch and parse run in the client process, so its CPU counts against the client.
 */
import { randomBytes } from "node:crypto";
import { freePort } from "../src/testing/nats-server.js";
import { withTempDir } from "./lib/fs.js";
import { runInFlight } from "./lib/load.js";
import { latencyHistogram, median, perSecond } from "./lib/stats.js";
import { tailLatency, type TailLatency } from "./net-load.js";
import { startStrataSystem } from "./net-systems.js";
import type { NetBenchParams } from "./net-workloads.js";

const KiB = 1024;
const SCRAPE_INTERVAL_MS = 1000;

export interface AppendFigures {
  opsPerSec: number;
  latency: TailLatency;
}

export interface MetricsOverheadVariant {
  inFlight256: AppendFigures;
  inFlight1: AppendFigures;
}

export interface MetricsOverheadRun {
  without: MetricsOverheadVariant;
  withScraper: MetricsOverheadVariant & { scrapes: number; exposition: { bytes: number; seriesCount: number } };
}

export interface MetricsOverheadFigures {
  what: string;
  runs: MetricsOverheadRun[];
  /** Medians over the runs. */
  without: MetricsOverheadVariant;
  withScraper: MetricsOverheadVariant;
  /** with scraper / without, of the medians. */
  ratio: { inFlight256: { opsPerSec: number; p50: number; p99: number }; inFlight1: { opsPerSec: number; p50: number; p99: number } };
}

async function appendAt(append: (value: Uint8Array) => Promise<void>, inFlight: number, count: number, value: Uint8Array): Promise<AppendFigures> {
  const histogram = latencyHistogram();
  try {
    const ms = await runInFlight(inFlight, count, () => append(value), histogram);
    return { opsPerSec: perSecond(count, ms), latency: tailLatency(histogram) };
  } finally {
    histogram.destroy();
  }
}

async function variant(natsUrl: string, natsPid: number | undefined, parent: string | undefined, p: NetBenchParams, scraped: boolean): Promise<MetricsOverheadRun["withScraper"] | MetricsOverheadVariant> {
  return withTempDir(`strata-bench-net-metrics-${scraped ? "on" : "off"}`, parent, async (dir) => {
    const metricsPort = scraped ? await freePort() : undefined;
    const system = await startStrataSystem({ name: "strataFsyncAlways", natsUrl, natsPid, dir, ...(metricsPort !== undefined ? { metricsPort } : {}) });
    let scrapes = 0;
    let exposition = { bytes: 0, seriesCount: 0 };
    let timer: NodeJS.Timeout | undefined;
    let scraping: Promise<void> = Promise.resolve();
    try {
      const value = randomBytes(KiB);
      const warm = await system.stream("metrics_warmup");
      await runInFlight(256, p.warmupOps, () => warm.append(value));
      if (metricsPort !== undefined) {
        const scrape = async (): Promise<void> => {
          const res = await fetch(`http://127.0.0.1:${metricsPort}/metrics`);
          if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status}`);
          const text = await res.text();
          scrapes += 1;
          exposition = { bytes: Buffer.byteLength(text), seriesCount: text.split("\n").filter((l) => l !== "" && !l.startsWith("#")).length };
        };
        await scrape(); // one before, so a short (tiny) run scrapes at least once
        timer = setInterval(() => (scraping = scraping.then(scrape)), SCRAPE_INTERVAL_MS);
      }
      const s256 = await system.stream("metrics_append256");
      const inFlight256 = await appendAt((v) => s256.append(v), 256, p.appendMessages.inFlight256_1KiB, value);
      const s1 = await system.stream("metrics_append1");
      const inFlight1 = await appendAt((v) => s1.append(v), 1, p.appendMessages.inFlight1_1KiB, value);
      if (timer !== undefined) clearInterval(timer);
      await scraping;
      return metricsPort === undefined ? { inFlight256, inFlight1 } : { inFlight256, inFlight1, scrapes, exposition };
    } finally {
      if (timer !== undefined) clearInterval(timer);
      await scraping.catch(() => undefined);
      await system.close();
    }
  });
}

function medianVariant(vs: readonly MetricsOverheadVariant[]): MetricsOverheadVariant {
  const figures = (k: keyof MetricsOverheadVariant): AppendFigures => {
    const tail = (q: "p50" | "p99" | "p999" | "max") => median(vs.map((v) => v[k].latency[q]));
    return { opsPerSec: median(vs.map((v) => v[k].opsPerSec)), latency: { p50: tail("p50"), p99: tail("p99"), p999: tail("p999"), max: tail("max"), unit: "us" } };
  };
  return { inFlight256: figures("inFlight256"), inFlight1: figures("inFlight1") };
}

const ratio = (a: number, b: number) => Number((a / b).toFixed(4));

export async function runMetricsOverhead(opts: { natsUrl: string; natsPid: number | undefined; dir?: string; p: NetBenchParams; runs: number; progress: (line: string) => void }): Promise<MetricsOverheadFigures> {
  const runs: MetricsOverheadRun[] = [];
  for (let r = 0; r < opts.runs; r++) {
    // Alternate which goes first, so drift in the machine's speed spreads over both.
    const order = r % 2 === 0 ? [false, true] : [true, false];
    const got: Partial<MetricsOverheadRun> = {};
    for (const scraped of order) {
      const v = await variant(opts.natsUrl, opts.natsPid, opts.dir, opts.p, scraped);
      if (scraped) got.withScraper = v as MetricsOverheadRun["withScraper"];
      else got.without = v;
      opts.progress(`metrics overhead run ${r + 1}: ${scraped ? "with scraper" : "without metrics"}: append at 256 ${Math.round(v.inFlight256.opsPerSec)} msgs/s, at 1 p50 ${v.inFlight1.latency.p50} us`);
    }
    runs.push(got as MetricsOverheadRun);
  }
  const without = medianVariant(runs.map((r) => r.without));
  const withScraper = medianVariant(runs.map((r) => r.withScraper));
  const r = (k: keyof MetricsOverheadVariant) => ({
    opsPerSec: ratio(withScraper[k].opsPerSec, without[k].opsPerSec),
    p50: ratio(withScraper[k].latency.p50, without[k].latency.p50),
    p99: ratio(withScraper[k].latency.p99, without[k].latency.p99),
  });
  return {
    what: "1 KiB appends (fsync always, one strata server child) with no metrics vs with metrics recorded and /metrics scraped every second; ratio = with scraper / without",
    runs,
    without,
    withScraper,
    ratio: { inFlight256: r("inFlight256"), inFlight1: r("inFlight1") },
  };
}

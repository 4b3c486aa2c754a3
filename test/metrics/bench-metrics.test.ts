/**
 * Keeps the metrics-overhead rows of the net bench (bench/net-metrics.ts) from rotting: at tiny
 * scale, one run of appends without metrics and with a scraper, against real server children and
 * a real nats-server. Shape and sanity only (positive, finite figures; the scraper scraped, and
 * what it got has series); no timing thresholds on a shared machine — the lead takes the figures.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import { runMetricsOverhead } from "../../bench/net-metrics.js";
import { PARAMS } from "../../bench/net-workloads.js";
import { startNatsServer, type RunningNatsServer } from "../../src/testing/nats-server.js";

let nats: RunningNatsServer;

beforeAll(async () => {
  nats = await startNatsServer();
});

afterAll(async () => {
  await nats?.stop();
});

it("measures appends without metrics and with a scraper, as ratios", async () => {
  const p = { ...PARAMS.tiny, warmupOps: 50, appendMessages: { ...PARAMS.tiny.appendMessages, inFlight256_1KiB: 500, inFlight1_1KiB: 20 } };
  const result = await runMetricsOverhead({ natsUrl: nats.url, natsPid: nats.pid, p, runs: 1, progress: () => undefined });
  expect(result.runs).toHaveLength(1);
  expect(result.runs[0]!.withScraper.scrapes).toBeGreaterThanOrEqual(1);
  expect(result.runs[0]!.withScraper.exposition.seriesCount).toBeGreaterThan(50);
  for (const v of [result.without, result.withScraper]) {
    for (const k of ["inFlight256", "inFlight1"] as const) {
      expect(v[k].opsPerSec).toBeGreaterThan(0);
      expect(v[k].latency.p50).toBeGreaterThan(0);
      expect(v[k].latency.p50).toBeLessThanOrEqual(v[k].latency.max);
    }
  }
  for (const k of ["inFlight256", "inFlight1"] as const) {
    for (const q of ["opsPerSec", "p50", "p99"] as const) {
      expect(Number.isFinite(result.ratio[k][q]) && result.ratio[k][q] > 0, `${k}.${q}`).toBe(true);
    }
  }
});

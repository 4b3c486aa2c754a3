/**
 * Keeps the failover benchmark from rotting: runs it at tiny scale (a cluster of real processes:
 * nats-server, coordinator, four servers; kill -9 of two of them; a coordinator restarted on a
 * state of 10,000 assignments) and checks the JSON document: its shape, that every timed write
 * happened after the lease could end, that the new owners really read from the object store,
 * that the coordinator answered, and that JetStream's constants sit beside the figures. No timing
 * thresholds: the numbers of a tiny run on a shared machine mean nothing.
 */
import { describe, expect, it } from "vitest";
import { runFailoverBench, PARAMS, type FailoverBenchResult } from "../bench/failover.js";
import { parseSuites } from "../src/cli/bench.js";
import { expectFigure, expectPositive, expectTinyDocument } from "./helpers/bench-doc.js";

function expectFailoverDocument(doc: FailoverBenchResult): void {
  const p = PARAMS.tiny;
  expectTinyDocument(doc, "failover", p.kill.sizes.map((s) => `recoveryP99MsAt${s}`));
  expect(doc.params).toEqual(p);
  expect(doc.lease.leaseMs).toBe(p.kill.leaseMs);
  expect(doc.lease.leaseMarginMs).toBe(p.kill.leaseMs / 5);

  const f = doc.figures;
  expect(f.recovery.map((r) => r.locations)).toEqual(p.kill.sizes);
  for (const [i, r] of f.recovery.entries()) {
    const where = `recovery[${i}]`;
    expect(r.kills, where).toBe(p.kill.killsPerSize);
    expect(r.samples, where).toBe(p.kill.killsPerSize * p.kill.samplesPerKill);
    expectFigure(r.p50Ms, 1, `${where}.p50Ms`);
    expectFigure(r.p99Ms, 1, `${where}.p99Ms`);
    expectFigure(r.maxMs, 1, `${where}.maxMs`);
    // No location can move before the victim's lease (less one renewal interval) has run out.
    expect(r.p50Ms.median, where).toBeGreaterThanOrEqual(doc.lease.leaseMs + doc.lease.leaseMarginMs - doc.lease.leaseRenewMs);
    expect(r.p50Ms.median).toBeLessThanOrEqual(r.p99Ms.median);
    expect(r.overheadMs).toBeCloseTo(r.p50Ms.median - (doc.lease.leaseMs + doc.lease.leaseMarginMs), 0);
    // Every timed location was taken over from the dead server's object-store data.
    expect(r.takeover.imports, where).toBe(r.samples);
    expectFigure(r.takeover.bytesPerKill, 1, `${where}.takeover.bytesPerKill`);
    expect(r.takeover.checkpointsRead + r.takeover.segmentsRead, where).toBeGreaterThan(0);
    expectPositive(r.takeover.bytesPerImport, `${where}.takeover.bytesPerImport`);
  }
  expectFigure(f.populateSeconds, 1, "populateSeconds");

  const c = f.coordinator;
  expect(c.assignments).toBe(p.coordinator.assignments);
  expectPositive(c.writeSeconds, "coordinator.writeSeconds");
  for (const k of ["restartMs", "restartEmptyMs", "readyLogMs", "locatesPerSec"] as const) expectFigure(c[k], 1, `coordinator.${k}`);

  expect(doc.comparison.jetstreamR3.electionTimeoutMs).toEqual({ min: 4000, max: 9000 });
  expect(doc.comparison.strataDefaults.leaseMs).toBe(10_000);
}

describe("failover benchmark (tiny)", () => {
  it("kills servers of a real cluster, times recovery and takeover reads, restarts a loaded coordinator", async () => {
    const progress: string[] = [];
    const doc = await runFailoverBench({ scale: "tiny", runs: 1, progress: (line) => progress.push(line) });
    expectFailoverDocument(doc);
    expect(JSON.parse(JSON.stringify(doc))).toEqual(doc);
    expect(progress.some((line) => line.includes("kill 1/1 of s1"))).toBe(true);
  }, 120_000);

  it("is a suite of `strata bench`, and refuses bad options at the edge", async () => {
    expect(parseSuites("failover")).toEqual(["failover"]);
    expect(parseSuites("all")).toContain("failover");
    await expect(runFailoverBench({ scale: "tiny", runs: 0 })).rejects.toThrow(/positive integer/);
    await expect(runFailoverBench({ scale: "huge" as "tiny", runs: 1 })).rejects.toThrow(/scale/);
  });
});

/**
 * Keeps the net benchmark (Strata vs JetStream over one nats-server) from rotting: runs it at tiny
 * scale, directly and through `strata bench --suite net`, and checks the JSON document's shape and
 * that every number is positive and finite. No timing thresholds: the numbers of a tiny run on a
 * shared machine mean nothing. It needs nats-server on PATH (or $NATS_SERVER), like test/net.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import { runNetBench, type NetBenchResult } from "../bench/net.js";
import type { SystemFigures, ThroughputFigures } from "../bench/net-report.js";
import { parseSuites } from "../src/cli/bench.js";
import { StrataError } from "../src/errors.js";
import { expectFigure, expectPositive, expectTinyDocument, runBenchCommand } from "./helpers/bench-doc.js";

const SYSTEMS = ["strataFsyncAlways", "strataFsyncInterval", "jetstream"] as const;

const TARGET_NAMES = [
  "appendAt256VsJetStream",
  "appendAt256VsJetStreamFsyncInterval",
  "kvPutVsJetStream",
  "kvPutVsJetStreamFsyncInterval",
  "newLocationsVsJetStream",
  "newLocationsVsJetStreamFsyncInterval",
  "coordinatorCpuPerNewLocation",
  "coordinatorCpuPerNewLocationFsyncInterval",
  "pacedAckP999",
  "pacedAckP999FsyncInterval",
  "pacedSmallAckP999",
  "pacedSmallAckP999FsyncInterval",
  "pacedAckP999EveryRun",
  "pacedSmallAckP999EveryRun",
  "appendP50FsyncInterval",
  "appendP50",
  "getP50",
  "kvGetP50",
  "cpuPerAppendAt1VsJetStream",
  "getP50FsyncInterval",
  "kvGetP50FsyncInterval",
  "cpuPerAppendAt1VsJetStreamFsyncInterval",
  "idleRssStrataServer",
  "idleRssCoordinator",
];



function expectThroughput(t: ThroughputFigures, where: string): void {
  expectFigure(t.opsPerSec, 1, `${where}.opsPerSec`);
  expectFigure(t.mbPerSec, 1, `${where}.mbPerSec`);
  expect(t.latency.unit).toBe("us");
  for (const k of ["p50", "p99", "p999", "max"] as const) expectPositive(t.latency[k], `${where}.latency.${k}`);
  expect(t.latency.p50).toBeLessThanOrEqual(t.latency.p99);
  expect(t.latency.p99).toBeLessThanOrEqual(t.latency.p999);
  expect(t.latency.p999).toBeLessThanOrEqual(t.latency.max);
  // The client's CPU is always measured; the others where /proc can tell (Linux).
  expect(Number.isFinite(t.cpuUsPerOp.client), `${where}.cpuUsPerOp.client`).toBe(true);
  for (const [role, us] of Object.entries(t.cpuUsPerOp)) expect(us, `${where}.cpuUsPerOp.${role}`).toBeGreaterThanOrEqual(0);
}

function expectSystem(f: SystemFigures, name: string): void {
  for (const [key, t] of Object.entries(f.append)) expectThroughput(t, `${name}.append.${key}`);
  expect(Object.keys(f.append)).toEqual(["inFlight1_1KiB", "inFlight256_1KiB", "inFlight256_100B", "inFlight256_4KiB"]);
  if (name === "jetstream") expect(f.appendMany).toBeUndefined();
  else expectThroughput(f.appendMany!, `${name}.appendMany`);
  expectFigure(f.readAll.msgsPerSec, 1, `${name}.readAll`);
  expectThroughput(f.get.inFlight1, `${name}.get.inFlight1`);
  expectThroughput(f.get.inFlight64, `${name}.get.inFlight64`);
  expectThroughput(f.kvPut, `${name}.kvPut`);
  expectThroughput(f.kvGet.inFlight1, `${name}.kvGet.inFlight1`);
  expectThroughput(f.kvGet.inFlight64, `${name}.kvGet.inFlight64`);
  if (name === "jetstream") {
    // 8 MiB is over nats-server's default max_payload; JetStream refuses it, Strata chunks it.
    expect(f.large).toMatchObject({ accepted: false, error: expect.stringMatching(/MAX_PAYLOAD/) });
  } else {
    expect(f.large.accepted).toBe(true);
    if (f.large.accepted) {
      expectFigure(f.large.appendMbPerSec, 1, `${name}.large.appendMbPerSec`);
      expectFigure(f.large.getMbPerSec, 1, `${name}.large.getMbPerSec`);
    }
  }
  for (const k of ["p50", "p99", "p999", "max"] as const) expectPositive(f.paced.latency[k], `${name}.paced.latency.${k}`);
  expectFigure(f.paced.msgsPerSec, 1, `${name}.paced.msgsPerSec`);
  // New locations (a coordinated Strata, a stream each for JetStream), and Strata's coordinated append.
  expectThroughput(f.newLocations!, `${name}.newLocations`);
  expectFigure(f.newLocationsSeconds, 1, `${name}.newLocationsSeconds`);
  if (name === "jetstream") expect(f.coordinatedAppend).toBeUndefined();
  else {
    expectThroughput(f.coordinatedAppend!, `${name}.coordinatedAppend`);
    expect(f.newLocations!.cpuUsPerOp.coordinator, `${name}.newLocations.cpuUsPerOp.coordinator`).toBeGreaterThanOrEqual(0);
  }
  for (const k of ["p50", "p99", "p999", "max"] as const) expectPositive(f.pacedSmall.latency[k], `${name}.pacedSmall.latency.${k}`);
  expectFigure(f.pacedSmall.msgsPerSec, 1, `${name}.pacedSmall.msgsPerSec`);
  expect(f.pacedSmall.p999Runs.runs).toHaveLength(1);
  // The idle probe's timer lag during each paced load: the machine's own stalls, beside the figure.
  for (const key of ["paced", "pacedSmall"] as const) {
    for (const lag of [f[key].machineLagMsMax!, f[key].machineLagP999Ms!]) {
      expect(lag.runs, `${name}.${key} machine lag`).toHaveLength(1);
      expect(lag.runs[0]).toBeGreaterThanOrEqual(0);
      expect(Number.isFinite(lag.runs[0])).toBe(true);
    }
    expect(f[key].machineLagMsMax!.runs[0]).toBeGreaterThanOrEqual(f[key].machineLagP999Ms!.runs[0]!);
  }
}

function expectNetDocument(doc: NetBenchResult): void {
  expectTinyDocument(doc, "net", TARGET_NAMES);
  expect(doc.setup.natsServer.version).toMatch(/^\d+\.\d+\.\d+/);
  expect(doc.setup.natsServer.maxPayloadBytes).toBe(1024 * 1024);
  expect(doc.setup.strataServer).toMatch(/child process/);
  expect(Object.keys(doc.setup.systems).sort()).toEqual([...SYSTEMS].sort());
  // The two Strata modes are labelled, and the notes say which one is like-for-like.
  expect(doc.notes.join(" ")).toMatch(/'strataFsyncAlways' = .*fsync always/);
  expect(doc.notes.join(" ")).toMatch(/'strataFsyncInterval' = fsync interval/);

  for (const name of SYSTEMS) expectSystem(doc.figures[name], name);
  for (const kind of ["request", "mux"] as const) {
    expectThroughput(doc.figures.echo[kind].inFlight1, `echo.${kind}.inFlight1`);
    expectThroughput(doc.figures.echo[kind].inFlight256, `echo.${kind}.inFlight256`);
  }

  expect(doc.table.length).toBeGreaterThan(20);
  for (const row of doc.table) {
    const where = `${row.workload} / ${row.metric}`;
    expect(["higher", "lower"]).toContain(row.better);
    // Process CPU is read in 10 ms ticks: at tiny scale (a few dozen operations) a process's share
    // may read as 0, and so may a ratio over it.
    // So may the idle probe's timer lag in a window of 0.3 s (rounded to 0.01 ms).
    const cpuRow = row.unit.startsWith("us/") || row.metric === "coordinator CPU per new location" || row.metric.startsWith("machine stall");
    if (cpuRow) {
      for (const mode of ["strataFsyncAlways", "strataFsyncInterval"] as const) expect(row[mode], `${where}: ${mode}`).toBeGreaterThanOrEqual(0);
    } else {
      expectPositive(row.strataFsyncAlways, `${where}: strataFsyncAlways`);
      expectPositive(row.strataFsyncInterval, `${where}: strataFsyncInterval`);
    }
    if (row.workload.includes("8 MiB") || row.metric === "coordinator CPU per new location") {
      expect(row.jetstream, where).toBeNull();
      expect(row.ratio).toEqual({ strataFsyncAlways: null, strataFsyncInterval: null });
    } else if (cpuRow) {
      expect(row.jetstream, `${where}: jetstream`).toBeGreaterThanOrEqual(0);
    } else {
      expectPositive(row.jetstream, `${where}: jetstream`);
      expectPositive(row.ratio.strataFsyncAlways, `${where}: ratio.strataFsyncAlways`);
      expectPositive(row.ratio.strataFsyncInterval, `${where}: ratio.strataFsyncInterval`);
    }
  }
  expect(doc.table.find((r) => r.workload.includes("8 MiB"))?.note).toMatch(/jetstream rejected it/);
  expect(doc.table.filter((r) => r.metric.startsWith("machine stall")).map((r) => r.workload)).toEqual([expect.stringMatching(/^paced 4 KiB/), expect.stringMatching(/^paced 100 B/)]);
  expect(doc.ceiling.length).toBe(12);
  // The floor of the 1-in-flight targets: fdatasync p50 of the data directory's disk, every run.
  expect(doc.fdatasyncP50Us.runs).toHaveLength(1);
  expectPositive(doc.fdatasyncP50Us.median, "fdatasyncP50Us.median");
  // The fdatasync histogram rows: overwrite and growing the file, p50/p99/p99.9/max each.
  expect(doc.fdatasync).toHaveLength(8);
  for (const row of doc.fdatasync) expectPositive(row.value, `${row.workload} / ${row.metric}`);
  // Idle RSS of each process, after start and after the load: VmRSS is its anonymous plus file pages.
  for (const when of ["afterStart", "afterLoad"] as const) {
    for (const role of ["natsServer", "strataServer", "coordinator"] as const) {
      const r = doc.idleRss[when][role];
      for (const k of ["vmRssKb", "rssAnonKb", "rssFileKb"] as const) expectPositive(r[k], `idleRss.${when}.${role}.${k}`);
      expect(r.rssAnonKb + r.rssFileKb, `idleRss.${when}.${role}`).toBeLessThanOrEqual(r.vmRssKb);
    }
  }
  for (const row of doc.ceiling) expectPositive(row.value, `${row.workload} / ${row.metric}`);

}

describe("net benchmark (tiny)", () => {
  const scratch: string[] = [];
  afterEach(() => {
    vi.restoreAllMocks();
    for (const d of scratch.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });
  const tempDir = () => {
    const d = fs.mkdtempSync(path.join(os.tmpdir(), "strata-bench-net-test-"));
    scratch.push(d);
    return d;
  };

  it("compares Strata (both fsync modes) with JetStream in one complete document and cleans up", async () => {
    const dir = tempDir();
    const progress: string[] = [];
    const doc = await runNetBench({ scale: "tiny", runs: 1, dir, progress: (line) => progress.push(line) });
    expectNetDocument(doc);
    expect(JSON.parse(JSON.stringify(doc))).toEqual(doc);
    expect(progress.some((l) => l.startsWith("jetstream:"))).toBe(true);
    expect(fs.readdirSync(dir)).toEqual([]);
  }, 180_000);

  it("runs as `strata bench --suite net --tiny --out FILE`, printing the same document it writes", async () => {
    const dir = tempDir();
    const out = path.join(dir, "bench.json");
    const printed = await runBenchCommand(["bench", "--suite", "net", "--tiny", "--out", out, "--dir", dir]);
    const written = fs.readFileSync(out, "utf8");
    expect(printed).toBe(written);
    const doc = JSON.parse(written) as { net: NetBenchResult };
    expect(Object.keys(doc)).toEqual(["net"]);
    expectNetDocument(doc.net);
    expect(fs.readdirSync(dir)).toEqual(["bench.json"]);
  }, 180_000);

  it("refuses unknown suites and bad run counts at the edge", async () => {
    expect(parseSuites("net")).toEqual(["net"]);
    expect(parseSuites("engine,net")).toEqual(["engine", "net"]);
    expect(parseSuites("all")).toEqual(expect.arrayContaining(["engine", "net"]));
    for (const bad of ["", "bogus", "net,bogus"]) {
      let err: unknown;
      try {
        parseSuites(bad);
      } catch (e) {
        err = e;
      }
      expect(StrataError.is(err, "INVALID_ARGUMENT"), bad).toBe(true);
    }
    await expect(runNetBench({ scale: "tiny", runs: 0 })).rejects.toThrow(/positive integer/);
    await expect(runNetBench({ scale: "huge" as "tiny", runs: 1 })).rejects.toThrow(/scale/);
  });
});

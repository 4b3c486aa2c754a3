/**
 * Turns the net benchmark's runs into its document: per system, the median of every figure over
 * runs (each run's value kept); a side-by-side table of the medians with the ratio Strata /
 * JetStream for each Strata mode; the request/reply ceiling; and the goals with pass/fail.
 */
import { judge, type TargetResult, type TargetSpec } from "./lib/report.js";
import { figure, median, round, type Figure } from "./lib/stats.js";
import { medianTail, type TailLatency } from "./net-load.js";
import type { FdatasyncResult } from "./lib/fdatasync.js";
import type { SystemName } from "./net-systems.js";
import { APPEND_KEYS, type AppendKey, type EchoRun, type SystemRun, type ThroughputRun } from "./net-workloads.js";

export interface ThroughputFigures {
  opsPerSec: Figure;
  mbPerSec: Figure;
  latency: TailLatency;
  /** Median CPU µs per operation of each process. */
  cpuUsPerOp: Record<string, number>;
}

export type LargeFigures = { accepted: true; appendMbPerSec: Figure; getMbPerSec: Figure } | { accepted: false; error: string };

export interface SystemFigures {
  append: Record<AppendKey, ThroughputFigures>;
  appendMany?: ThroughputFigures;
  readAll: { msgsPerSec: Figure };
  get: { inFlight1: ThroughputFigures; inFlight64: ThroughputFigures };
  kvPut: ThroughputFigures;
  kvGet: { inFlight1: ThroughputFigures; inFlight64: ThroughputFigures };
  large: LargeFigures;
  /** `p999Runs`: each run's ack p99.9 (µs), for the "in every run" targets. */
  paced: PacedFigures;
  pacedSmall: PacedFigures;
  /** opsPerSec = new locations per second; cpuUsPerOp per new location (coordinator: its child process). */
  newLocations?: ThroughputFigures;
  newLocationsSeconds?: Figure;
  coordinatedAppend?: ThroughputFigures;
}

/**
 * `p999Runs`: each run's ack p99.9 (µs), for the "in every run" targets. `machineLagMsMax` and
 * `machineLagP999Ms`: per run, how late an idle probe process's timers fired during the load
 * (./lib/lag-probe.ts), the machine's own stalls at those moments.
 */
export interface PacedFigures {
  latency: TailLatency;
  msgsPerSec: Figure;
  sendLagMsMax: Figure;
  p999Runs: Figure;
  machineLagMsMax?: Figure;
  machineLagP999Ms?: Figure;
}

export interface EchoFigures {
  request: { inFlight1: ThroughputFigures; inFlight256: ThroughputFigures };
  mux: { inFlight1: ThroughputFigures; inFlight256: ThroughputFigures };
}

export interface TableRow {
  workload: string;
  metric: string;
  unit: string;
  better: "higher" | "lower";
  strataFsyncAlways: number | null;
  strataFsyncInterval: number | null;
  jetstream: number | null;
  /** Strata / JetStream of the medians, per Strata mode (null where either side has no figure). */
  ratio: { strataFsyncAlways: number | null; strataFsyncInterval: number | null };
  note?: string;
}

export interface CeilingRow {
  workload: string;
  metric: string;
  unit: string;
  value: number;
}

function throughput(runs: readonly ThroughputRun[]): ThroughputFigures {
  const roles = [...new Set(runs.flatMap((r) => Object.keys(r.cpuUsPerOp)))];
  const cpuUsPerOp: Record<string, number> = {};
  for (const role of roles) {
    const values = runs.map((r) => r.cpuUsPerOp[role]).filter((v): v is number => v !== undefined);
    if (values.length > 0) cpuUsPerOp[role] = round(median(values), 3);
  }
  return {
    opsPerSec: figure(runs.map((r) => r.opsPerSec), "ops/s"),
    mbPerSec: figure(runs.map((r) => r.mbPerSec), "MB/s"),
    latency: medianTail(runs.map((r) => r.latency)),
    cpuUsPerOp,
  };
}

export function systemFigures(runs: readonly SystemRun[]): SystemFigures {
  const append = {} as Record<AppendKey, ThroughputFigures>;
  for (const key of APPEND_KEYS) append[key] = throughput(runs.map((r) => r.append[key]));
  const many = runs.map((r) => r.appendMany).filter((r): r is ThroughputRun => r !== undefined);
  const rejected = runs.find((r) => !r.large.accepted)?.large;
  const accepted = runs.map((r) => r.large).filter((l): l is Extract<SystemRun["large"], { accepted: true }> => l.accepted);
  const large: LargeFigures =
    rejected && !rejected.accepted
      ? { accepted: false, error: rejected.error }
      : { accepted: true, appendMbPerSec: figure(accepted.map((l) => l.appendMbPerSec), "MB/s"), getMbPerSec: figure(accepted.map((l) => l.getMbPerSec), "MB/s") };
  const newLocations = runs.map((r) => r.newLocations).filter((r): r is ThroughputRun => r !== undefined);
  const coordinatedAppend = runs.map((r) => r.coordinatedAppend).filter((r): r is ThroughputRun => r !== undefined);
  return {
    append,
    ...(many.length === runs.length && many.length > 0 ? { appendMany: throughput(many) } : {}),
    ...(newLocations.length === runs.length && newLocations.length > 0
      ? { newLocations: throughput(newLocations), newLocationsSeconds: figure(runs.map((r) => r.newLocationsSeconds ?? 0), "s") }
      : {}),
    ...(coordinatedAppend.length === runs.length && coordinatedAppend.length > 0 ? { coordinatedAppend: throughput(coordinatedAppend) } : {}),
    readAll: { msgsPerSec: figure(runs.map((r) => r.readAll.msgsPerSec), "msgs/s") },
    get: { inFlight1: throughput(runs.map((r) => r.get.inFlight1)), inFlight64: throughput(runs.map((r) => r.get.inFlight64)) },
    kvPut: throughput(runs.map((r) => r.kvPut)),
    kvGet: { inFlight1: throughput(runs.map((r) => r.kvGet.inFlight1)), inFlight64: throughput(runs.map((r) => r.kvGet.inFlight64)) },
    large,
    paced: pacedFigures(runs.map((r) => r.paced)),
    pacedSmall: pacedFigures(runs.map((r) => r.pacedSmall)),
  };
}

function pacedFigures(runs: ReadonlyArray<SystemRun["paced"]>): PacedFigures {
  const lags = runs.flatMap((r) => (r.machineLag ? [r.machineLag] : []));
  return {
    latency: medianTail(runs.map((r) => r.latency)),
    msgsPerSec: figure(runs.map((r) => r.msgsPerSec), "msgs/s"),
    sendLagMsMax: figure(runs.map((r) => r.sendLagMsMax), "ms"),
    p999Runs: figure(runs.map((r) => r.latency.p999), "us"),
    ...(lags.length === runs.length && lags.length > 0
      ? { machineLagMsMax: figure(lags.map((l) => round(l.maxMs, 2)), "ms"), machineLagP999Ms: figure(lags.map((l) => round(l.p999Ms, 2)), "ms") }
      : {}),
  };
}

/** The paced rows' names (the issue's "No fsync stalls" goals). */
const PACED_4KIB = "paced 4 KiB at 10 Mbit/s (305 msgs/s, open loop)";
const PACED_100B = "paced 100 B at 10 Mbit/s (12,500 msgs/s, open loop)";

/**
 * fdatasync latency on the disk of the strata data directories (bench/lib/fdatasync.ts), each
 * run's histogram summarised as medians over runs: `append` (each write grows the file: a journal
 * commit per fdatasync) and `overwrite` (pre-zeroed blocks: what Strata's log pays).
 */
export function buildFdatasyncRows(runs: readonly FdatasyncResult[]): CeilingRow[] {
  const rows: CeilingRow[] = [];
  if (runs.length === 0) return rows;
  for (const kind of ["overwrite", "append"] as const) {
    const workload = `fdatasync after a ${runs[0]!.writeBytes} B write, ${kind === "overwrite" ? "overwriting pre-zeroed blocks" : "growing the file"} (${runs[0]!.append.count} per run)`;
    for (const [k, label] of [["p50", "p50"], ["p99", "p99"], ["p999", "p99.9"], ["max", "max"]] as const) {
      rows.push({ workload, metric: `${label} latency`, unit: "ms", value: round(ms(median(runs.map((r) => r[kind][k]))), 4) });
    }
  }
  return rows;
}

export function echoFigures(runs: readonly EchoRun[]): EchoFigures {
  return {
    request: { inFlight1: throughput(runs.map((r) => r.request.inFlight1)), inFlight256: throughput(runs.map((r) => r.request.inFlight256)) },
    mux: { inFlight1: throughput(runs.map((r) => r.mux.inFlight1)), inFlight256: throughput(runs.map((r) => r.mux.inFlight256)) },
  };
}

type Pick = (f: SystemFigures) => number | undefined;

interface RowSpec {
  workload: string;
  metric: string;
  unit: string;
  better: "higher" | "lower";
  pick: Pick;
  /** What JetStream's column shows when `pick` differs for it (the appendMany row). */
  jetstreamPick?: Pick;
  note?: (f: Partial<Record<SystemName, SystemFigures>>) => string | undefined;
}

const ms = (us: number) => us / 1000;

/** The CPU rows at one request in flight (the "CPU per op, all processes" goal). */
const ONE_IN_FLIGHT_CPU = "CPU per acked 1 KiB append at 1 in flight";

/** The new-locations row (the "2,000 new locations × 5 msgs"; counts in params.newLocations). */
const NEW_LOCATIONS = "new locations × 5 msgs of 1 KiB (Strata: first append through the coordinator; JetStream: a stream each), 64 locations in flight";

function latencyRows(workload: string, at: (f: SystemFigures) => TailLatency, which: Array<"p50" | "p99" | "p999">): RowSpec[] {
  const label = { p50: "ack p50", p99: "p99", p999: "p99.9" } as const;
  return which.map((k) => ({ workload, metric: `${label[k]} latency`, unit: "ms", better: "lower", pick: (f) => ms(at(f)[k]) }));
}

/** The floor under a paced row's p99.9: the idle probe's worst timer lag during the load (median of the runs). */
function machineLagRow(workload: string, at: (f: SystemFigures) => PacedFigures): RowSpec {
  return {
    workload,
    metric: "machine stall: idle probe's timer lag, max",
    unit: "ms",
    better: "lower",
    pick: (f) => at(f).machineLagMsMax?.median,
    note: () => "not Strata's or JetStream's latency: how late a separate idle node process's 2 ms timers fired during the same load (bench/lib/lag-probe.ts); each run's value is in figures.*.paced(Small).machineLagMsMax",
  };
}

const ROWS: readonly RowSpec[] = [
  { workload: "append 1 KiB, 1 in flight", metric: "throughput", unit: "msgs/s", better: "higher", pick: (f) => f.append.inFlight1_1KiB.opsPerSec.median },
  ...latencyRows("append 1 KiB, 1 in flight", (f) => f.append.inFlight1_1KiB.latency, ["p50", "p99", "p999"]),
  { workload: "append 1 KiB, 256 in flight", metric: "throughput", unit: "msgs/s", better: "higher", pick: (f) => f.append.inFlight256_1KiB.opsPerSec.median },
  ...latencyRows("append 1 KiB, 256 in flight", (f) => f.append.inFlight256_1KiB.latency, ["p50", "p99", "p999"]),
  { workload: "append 100 B, 256 in flight", metric: "payload", unit: "MB/s", better: "higher", pick: (f) => f.append.inFlight256_100B.mbPerSec.median },
  { workload: "append 4 KiB, 256 in flight", metric: "payload", unit: "MB/s", better: "higher", pick: (f) => f.append.inFlight256_4KiB.mbPerSec.median },
  {
    workload: "Strata appendMany 1 KiB (100 per request, 8 requests in flight) vs JetStream publish at 256 in flight",
    metric: "throughput",
    unit: "msgs/s",
    better: "higher",
    pick: (f) => f.appendMany?.opsPerSec.median,
    jetstreamPick: (f) => f.append.inFlight256_1KiB.opsPerSec.median,
    note: () => "batched writes, not the main row: JetStream 2.9 has no batch publish, so its column repeats its plain publish at 256 in flight",
  },
  { workload: "read back all (the 1 KiB stream)", metric: "throughput", unit: "msgs/s", better: "higher", pick: (f) => f.readAll.msgsPerSec.median },
  { workload: "random get by seq, 1 in flight", metric: "throughput", unit: "ops/s", better: "higher", pick: (f) => f.get.inFlight1.opsPerSec.median },
  ...latencyRows("random get by seq, 1 in flight", (f) => f.get.inFlight1.latency, ["p99"]),
  { workload: "random get by seq, 64 in flight", metric: "throughput", unit: "ops/s", better: "higher", pick: (f) => f.get.inFlight64.opsPerSec.median },
  ...latencyRows("random get by seq, 64 in flight", (f) => f.get.inFlight64.latency, ["p99"]),
  { workload: "kv put 1 KiB, 256 in flight", metric: "throughput", unit: "ops/s", better: "higher", pick: (f) => f.kvPut.opsPerSec.median },
  ...latencyRows("kv put 1 KiB, 256 in flight", (f) => f.kvPut.latency, ["p99"]),
  { workload: "kv get 1 KiB, 1 in flight", metric: "throughput", unit: "ops/s", better: "higher", pick: (f) => f.kvGet.inFlight1.opsPerSec.median },
  { workload: "kv get 1 KiB, 64 in flight", metric: "throughput", unit: "ops/s", better: "higher", pick: (f) => f.kvGet.inFlight64.opsPerSec.median },
  {
    workload: "one 8 MiB message",
    metric: "append",
    unit: "MB/s",
    better: "higher",
    pick: (f) => (f.large.accepted ? f.large.appendMbPerSec.median : undefined),
    note: (all) => {
      const rejected = (Object.entries(all) as Array<[SystemName, SystemFigures]>).filter(([, f]) => !f.large.accepted);
      return rejected.length === 0 ? undefined : rejected.map(([name, f]) => `${name} rejected it: ${f.large.accepted ? "" : f.large.error}`).join("; ");
    },
  },
  { workload: "one 8 MiB message", metric: "get", unit: "MB/s", better: "higher", pick: (f) => (f.large.accepted ? f.large.getMbPerSec.median : undefined) },
  ...latencyRows(PACED_4KIB, (f) => f.paced.latency, ["p50", "p99", "p999"]),
  machineLagRow(PACED_4KIB, (f) => f.paced),
  ...latencyRows(PACED_100B, (f) => f.pacedSmall.latency, ["p50", "p99", "p999"]),
  machineLagRow(PACED_100B, (f) => f.pacedSmall),
  { workload: NEW_LOCATIONS, metric: "elapsed", unit: "s", better: "lower", pick: (f) => f.newLocationsSeconds?.median, note: () => "locations: params.newLocations.locations (2,000 at full scale)" },
  { workload: NEW_LOCATIONS, metric: "throughput", unit: "locations/s", better: "higher", pick: (f) => f.newLocations?.opsPerSec.median },
  {
    workload: NEW_LOCATIONS,
    metric: "coordinator CPU per new location",
    unit: "us",
    better: "lower",
    pick: (f) => f.newLocations?.cpuUsPerOp.coordinator,
    note: () => "process CPU of the coordinator child / locations created; JetStream has no coordinator (its stream creation runs inside nats-server: figures.jetstream.newLocations.cpuUsPerOp.natsServer)",
  },
  {
    workload: "append 1 KiB, 256 in flight, located through a coordinator (lease-checked admission)",
    metric: "throughput",
    unit: "msgs/s",
    better: "higher",
    pick: (f) => f.coordinatedAppend?.opsPerSec.median,
    jetstreamPick: (f) => f.append.inFlight256_1KiB.opsPerSec.median,
    note: () => "Strata with a coordinator child and its server registered with it; JetStream's column repeats its plain publish at 256 in flight",
  },
  {
    workload: "CPU per acked 1 KiB append at 256 in flight",
    metric: "all processes",
    unit: "us/msg",
    better: "lower",
    pick: (f) => sum(f.append.inFlight256_1KiB.cpuUsPerOp),
  },
  {
    workload: "CPU per acked 1 KiB append at 256 in flight",
    metric: "benchmark client process",
    unit: "us/msg",
    better: "lower",
    pick: (f) => f.append.inFlight256_1KiB.cpuUsPerOp.client,
  },
  { workload: ONE_IN_FLIGHT_CPU, metric: "all processes", unit: "us/msg", better: "lower", pick: (f) => sum(f.append.inFlight1_1KiB.cpuUsPerOp) },
  { workload: ONE_IN_FLIGHT_CPU, metric: "nats-server process", unit: "us/msg", better: "lower", pick: (f) => f.append.inFlight1_1KiB.cpuUsPerOp.natsServer },
  { workload: "CPU per random get by seq at 1 in flight", metric: "all processes", unit: "us/op", better: "lower", pick: (f) => sum(f.get.inFlight1.cpuUsPerOp) },
  { workload: "CPU per kv get at 1 in flight", metric: "all processes", unit: "us/op", better: "lower", pick: (f) => sum(f.kvGet.inFlight1.cpuUsPerOp) },
];

function sum(cpu: Record<string, number>): number | undefined {
  const values = Object.values(cpu);
  return values.length > 1 ? values.reduce((a, b) => a + b, 0) : undefined;
}

function cell(value: number | undefined): number | null {
  return value === undefined || !Number.isFinite(value) ? null : round(value, 4);
}

function ratio(a: number | null, b: number | null): number | null {
  return a === null || b === null || b === 0 ? null : round(a / b, 3);
}

export function buildTable(figures: Partial<Record<SystemName, SystemFigures>>): TableRow[] {
  return ROWS.map((spec) => {
    const at = (name: SystemName, pick: Pick) => (figures[name] ? cell(pick(figures[name]!)) : null);
    const strataFsyncAlways = at("strataFsyncAlways", spec.pick);
    const strataFsyncInterval = at("strataFsyncInterval", spec.pick);
    const jetstream = at("jetstream", spec.jetstreamPick ?? spec.pick);
    const row: TableRow = {
      workload: spec.workload,
      metric: spec.metric,
      unit: spec.unit,
      better: spec.better,
      strataFsyncAlways,
      strataFsyncInterval,
      jetstream,
      ratio: { strataFsyncAlways: ratio(strataFsyncAlways, jetstream), strataFsyncInterval: ratio(strataFsyncInterval, jetstream) },
    };
    const note = spec.note?.(figures);
    if (note !== undefined) row.note = note;
    return row;
  });
}

export function buildCeiling(echo: EchoFigures): CeilingRow[] {
  const rows: CeilingRow[] = [];
  for (const [kind, label] of [
    ["request", "nats.js nc.request() to an echo responder"],
    ["mux", "bare publish + wildcard-inbox mux to an echo responder"],
  ] as const) {
    for (const n of [1, 256] as const) {
      const f = echo[kind][`inFlight${n}`];
      rows.push({ workload: `${label}, 1 KiB, ${n} in flight`, metric: "throughput", unit: "msgs/s", value: f.opsPerSec.median });
      rows.push({ workload: `${label}, 1 KiB, ${n} in flight`, metric: "p50 latency", unit: "ms", value: round(ms(f.latency.p50), 4) });
      rows.push({ workload: `${label}, 1 KiB, ${n} in flight`, metric: "p99 latency", unit: "ms", value: round(ms(f.latency.p99), 4) });
    }
  }
  return rows;
}

/** The goals of the issue, judged on the table (only meaningful at full scale). */
export function judgeTargets(table: readonly TableRow[]): TargetResult[] {
  const find = (workload: string, metric: string) => {
    const row = table.find((r) => r.workload === workload && r.metric === metric);
    if (!row) throw new Error(`no table row "${workload}" / "${metric}"`);
    return row;
  };
  const out: TargetResult[] = [];
  const ratioGoal = (name: string, workload: string, metric: string, mode: "strataFsyncAlways" | "strataFsyncInterval") => {
    const spec: TargetSpec = { name, figure: `table["${workload}"]["${metric}"].ratio.${mode}`, op: ">=", threshold: 1.5, unit: "x JetStream" };
    out.push(judge(spec, find(workload, metric).ratio[mode] ?? 0));
  };
  const ratioGoal2x = (name: string, mode: "strataFsyncAlways" | "strataFsyncInterval") => {
    const spec: TargetSpec = { name, figure: `table["${NEW_LOCATIONS}"]["throughput"].ratio.${mode}`, op: ">=", threshold: 2, unit: "x JetStream" };
    out.push(judge(spec, find(NEW_LOCATIONS, "throughput").ratio[mode] ?? 0));
  };
  ratioGoal("appendAt256VsJetStream", "append 1 KiB, 256 in flight", "throughput", "strataFsyncAlways");
  ratioGoal("appendAt256VsJetStreamFsyncInterval", "append 1 KiB, 256 in flight", "throughput", "strataFsyncInterval");
  ratioGoal("kvPutVsJetStream", "kv put 1 KiB, 256 in flight", "throughput", "strataFsyncAlways");
  ratioGoal("kvPutVsJetStreamFsyncInterval", "kv put 1 KiB, 256 in flight", "throughput", "strataFsyncInterval");
  ratioGoal2x("newLocationsVsJetStream", "strataFsyncAlways");
  ratioGoal2x("newLocationsVsJetStreamFsyncInterval", "strataFsyncInterval");
  const cpu = find(NEW_LOCATIONS, "coordinator CPU per new location");
  for (const mode of ["strataFsyncAlways", "strataFsyncInterval"] as const) {
    const spec: TargetSpec = { name: mode === "strataFsyncAlways" ? "coordinatorCpuPerNewLocation" : "coordinatorCpuPerNewLocationFsyncInterval", figure: `table["${NEW_LOCATIONS}"]["coordinator CPU per new location"].${mode}`, op: "<=", threshold: 200, unit: "us" };
    out.push(judge(spec, cpu[mode] ?? Number.POSITIVE_INFINITY));
  }
  for (const [workload, base] of [[PACED_4KIB, "pacedAckP999"], [PACED_100B, "pacedSmallAckP999"]] as const) {
    const paced = find(workload, "p99.9 latency");
    for (const mode of ["strataFsyncAlways", "strataFsyncInterval"] as const) {
      const spec: TargetSpec = { name: mode === "strataFsyncAlways" ? base : `${base}FsyncInterval`, figure: `table["${paced.workload}"]["p99.9 latency"].${mode}`, op: "<", threshold: 20, unit: "ms" };
      out.push(judge(spec, paced[mode] ?? Number.POSITIVE_INFINITY));
    }
  }
  return out;
}

/** The paced goals "in every run" (fsync always): the worst run's ack p99.9, not the median. */
export function judgePacedEveryRun(figures: Partial<Record<SystemName, SystemFigures>>): TargetResult[] {
  const f = figures.strataFsyncAlways;
  return (["paced", "pacedSmall"] as const).map((key) => {
    const spec: TargetSpec = { name: key === "paced" ? "pacedAckP999EveryRun" : "pacedSmallAckP999EveryRun", figure: `max(figures.strataFsyncAlways.${key}.p999Runs.runs)`, op: "<", threshold: 20, unit: "ms" };
    return judge(spec, f ? round(ms(Math.max(...f[key].p999Runs.runs)), 4) : Number.POSITIVE_INFINITY);
  });
}

/**
 * The goals at one request in flight, against the floor measured in the same run: the
 * echo row (nats.js `nc.request()` to a Node responder, 1 KiB: `figures.echo.request.inFlight1`)
 * and the fdatasync p50 of the data directory's disk (bench/lib/fdatasync.ts, `overwrite`: what
 * the log's pre-zeroed segments pay). Each latency target's value is the p50 in ms and its
 * threshold that floor plus the allowed margin; a floor that was not measured makes its target
 * not met. CPU: all processes per op at 1 in flight, as a ratio to JetStream's.
 */
export function judgeOneInFlight(
  table: readonly TableRow[],
  figures: Partial<Record<SystemName, SystemFigures>>,
  echo: EchoFigures,
  fdatasyncP50Us: number | undefined,
): TargetResult[] {
  const echoMs = ms(echo.request.inFlight1.latency.p50);
  const syncMs = fdatasyncP50Us === undefined || !Number.isFinite(fdatasyncP50Us) ? Number.NaN : ms(fdatasyncP50Us);
  const echoFloor = "figures.echo.request.inFlight1.latency.p50";
  const out: TargetResult[] = [];
  const atMost = (name: string, figure: string, valueUs: number | undefined, floorMs: number, marginMs: number, floor: string) => {
    const threshold = Number.isNaN(floorMs) ? 0 : round(floorMs + marginMs, 4);
    const spec: TargetSpec = { name, figure: `${figure} (threshold: ${floor} + ${marginMs} ms)`, op: "<=", threshold, unit: "ms" };
    out.push(judge(spec, valueUs === undefined ? Number.POSITIVE_INFINITY : round(ms(valueUs), 4)));
  };
  const always = figures.strataFsyncAlways;
  const interval = figures.strataFsyncInterval;
  atMost("appendP50FsyncInterval", "figures.strataFsyncInterval.append.inFlight1_1KiB.latency.p50", interval?.append.inFlight1_1KiB.latency.p50, echoMs, 0.08, echoFloor);
  atMost("appendP50", "figures.strataFsyncAlways.append.inFlight1_1KiB.latency.p50", always?.append.inFlight1_1KiB.latency.p50, echoMs + syncMs, 0.1, `${echoFloor} + fdatasyncP50Us.median`);
  for (const [mode, f] of [["strataFsyncAlways", always], ["strataFsyncInterval", interval]] as const) {
    const suffix = mode === "strataFsyncAlways" ? "" : "FsyncInterval";
    atMost(`getP50${suffix}`, `figures.${mode}.get.inFlight1.latency.p50`, f?.get.inFlight1.latency.p50, echoMs, 0.05, echoFloor);
    atMost(`kvGetP50${suffix}`, `figures.${mode}.kvGet.inFlight1.latency.p50`, f?.kvGet.inFlight1.latency.p50, echoMs, 0.05, echoFloor);
    const cpu = table.find((r) => r.workload === ONE_IN_FLIGHT_CPU && r.metric === "all processes");
    const spec: TargetSpec = { name: `cpuPerAppendAt1VsJetStream${suffix}`, figure: `table["${ONE_IN_FLIGHT_CPU}"]["all processes"].ratio.${mode}`, op: "<=", threshold: 1.5, unit: "x JetStream" };
    out.push(judge(spec, cpu?.ratio[mode] ?? Number.POSITIVE_INFINITY));
  }
  return out;
}

/**
 * Turns the net benchmark's runs into its document: per system, the median of every figure over
 * runs (each run's value kept); a side-by-side table of the medians with the ratio Strata /
 * JetStream for each Strata mode; the request/reply ceiling; and the goals with pass/fail.
 */
import { judge, type TargetResult, type TargetSpec } from "./lib/report.js";
import { figure, median, round, type Figure } from "./lib/stats.js";
import { medianTail, type TailLatency } from "./net-load.js";
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
  paced: { latency: TailLatency; msgsPerSec: Figure; sendLagMsMax: Figure };
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
  return {
    append,
    ...(many.length === runs.length && many.length > 0 ? { appendMany: throughput(many) } : {}),
    readAll: { msgsPerSec: figure(runs.map((r) => r.readAll.msgsPerSec), "msgs/s") },
    get: { inFlight1: throughput(runs.map((r) => r.get.inFlight1)), inFlight64: throughput(runs.map((r) => r.get.inFlight64)) },
    kvPut: throughput(runs.map((r) => r.kvPut)),
    kvGet: { inFlight1: throughput(runs.map((r) => r.kvGet.inFlight1)), inFlight64: throughput(runs.map((r) => r.kvGet.inFlight64)) },
    large,
    paced: {
      latency: medianTail(runs.map((r) => r.paced.latency)),
      msgsPerSec: figure(runs.map((r) => r.paced.msgsPerSec), "msgs/s"),
      sendLagMsMax: figure(runs.map((r) => r.paced.sendLagMsMax), "ms"),
    },
  };
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

function latencyRows(workload: string, at: (f: SystemFigures) => TailLatency, which: Array<"p50" | "p99" | "p999">): RowSpec[] {
  const label = { p50: "ack p50", p99: "p99", p999: "p99.9" } as const;
  return which.map((k) => ({ workload, metric: `${label[k]} latency`, unit: "ms", better: "lower", pick: (f) => ms(at(f)[k]) }));
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
  ...latencyRows("paced 4 KiB at 10 Mbit/s (305 msgs/s, open loop)", (f) => f.paced.latency, ["p50", "p99", "p999"]),
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
  ratioGoal("appendAt256VsJetStream", "append 1 KiB, 256 in flight", "throughput", "strataFsyncAlways");
  ratioGoal("appendAt256VsJetStreamFsyncInterval", "append 1 KiB, 256 in flight", "throughput", "strataFsyncInterval");
  ratioGoal("kvPutVsJetStream", "kv put 1 KiB, 256 in flight", "throughput", "strataFsyncAlways");
  ratioGoal("kvPutVsJetStreamFsyncInterval", "kv put 1 KiB, 256 in flight", "throughput", "strataFsyncInterval");
  const paced = find("paced 4 KiB at 10 Mbit/s (305 msgs/s, open loop)", "p99.9 latency");
  for (const mode of ["strataFsyncAlways", "strataFsyncInterval"] as const) {
    const spec: TargetSpec = { name: mode === "strataFsyncAlways" ? "pacedAckP999" : "pacedAckP999FsyncInterval", figure: `table["${paced.workload}"]["p99.9 latency"].${mode}`, op: "<", threshold: 20, unit: "ms" };
    out.push(judge(spec, paced[mode] ?? Number.POSITIVE_INFINITY));
  }
  return out;
}

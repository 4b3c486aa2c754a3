/**
 * The parts every benchmark's JSON document shares: the machine it ran on, targets with their
 * pass/fail, and writing the document (one JSON document on stdout, optionally also to a file).
 * Progress goes to stderr so that stdout stays parseable.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

export interface MachineInfo {
  cpus: number;
  cpuModel: string;
  node: string;
  platform: string;
  arch: string;
  totalMemBytes: number;
  loadAverage1m: number;
}

export function machineInfo(): MachineInfo {
  const cpus = os.cpus();
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model ?? "unknown",
    node: process.version,
    platform: process.platform,
    arch: process.arch,
    totalMemBytes: os.totalmem(),
    loadAverage1m: Number(os.loadavg()[0]!.toFixed(2)),
  };
}

/** The head every benchmark document starts with. */
export interface BenchHeader<S extends string> {
  suite: S;
  scale: "tiny" | "full";
  runs: number;
  startedAt: string;
  elapsedSeconds: number;
  machine: MachineInfo;
}

/** The head of a document for `suite`, begun at `startedAt` (`started` = performance.now() then). */
export function benchHeader<S extends string>(suite: S, opts: { scale: "tiny" | "full"; runs: number }, startedAt: Date, started: number): BenchHeader<S> {
  return {
    suite,
    scale: opts.scale,
    runs: opts.runs,
    startedAt: startedAt.toISOString(),
    elapsedSeconds: Number(((performance.now() - started) / 1000).toFixed(1)),
    machine: machineInfo(),
  };
}

/** The tail every document ends with: its targets, whether all are met, and whether they apply (full scale only). */
export function targetsTail(targets: TargetResult[], scale: "tiny" | "full"): { targets: TargetResult[]; targetsMet: boolean; targetsApply: boolean } {
  return { targets, targetsMet: targets.every((t) => t.pass), targetsApply: scale === "full" };
}

export interface TargetSpec {
  /** Stable identifier of the target, e.g. "append256MsgsPerSec". */
  name: string;
  /** The figure it judges, as a path into the document, e.g. "figures.append.inFlight256.msgsPerSec". */
  figure: string;
  op: ">=" | "<=" | "<";
  threshold: number;
  unit: string;
}

export interface TargetResult extends TargetSpec {
  value: number;
  pass: boolean;
}

export function judge(spec: TargetSpec, value: number): TargetResult {
  const pass = spec.op === ">=" ? value >= spec.threshold : spec.op === "<=" ? value <= spec.threshold : value < spec.threshold;
  return { ...spec, value, pass };
}

/** Serializes a benchmark document: one JSON document, two-space indented, newline-terminated. */
export function toJson(doc: unknown): string {
  return `${JSON.stringify(doc, null, 2)}\n`;
}

/** Prints the document on stdout and, when `outFile` is given, writes it there atomically too. */
export function emit(doc: unknown, outFile?: string): void {
  const text = toJson(doc);
  if (outFile !== undefined) {
    const tmp = path.join(path.dirname(outFile), `.${path.basename(outFile)}.${process.pid}.tmp`);
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, outFile);
  }
  process.stdout.write(text);
}

/** A progress reporter on stderr, with seconds since it was made. */
export function stderrProgress(): (line: string) => void {
  const started = performance.now();
  return (line) => process.stderr.write(`[${((performance.now() - started) / 1000).toFixed(1)}s] ${line}\n`);
}

/**
 * Shape checks shared by the tiny benchmark tests: every figure a benchmark prints must be a
 * positive, finite number, medians come with one value per run, latencies are in microseconds
 * with ordered percentiles.
 */
import os from "node:os";
import { Command } from "commander";
import { expect, vi } from "vitest";
import { register } from "../../src/cli/bench.js";

export function expectPositive(value: unknown, where: string): void {
  expect(typeof value, where).toBe("number");
  expect(Number.isFinite(value as number), `${where} is finite`).toBe(true);
  expect(value as number, where).toBeGreaterThan(0);
}

export function expectFigure(fig: unknown, runs: number, where: string): void {
  const f = fig as { median: unknown; runs: unknown; unit: unknown };
  expect(typeof f.unit, `${where}.unit`).toBe("string");
  expectPositive(f.median, `${where}.median`);
  expect(Array.isArray(f.runs), `${where}.runs`).toBe(true);
  expect((f.runs as unknown[]).length, `${where}.runs`).toBe(runs);
  (f.runs as unknown[]).forEach((v, i) => expectPositive(v, `${where}.runs[${i}]`));
}

export function expectLatency(lat: unknown, where: string): void {
  const l = lat as Record<string, unknown>;
  expect(l.unit, `${where}.unit`).toBe("us");
  for (const k of ["p50", "p90", "p99", "max"]) expectPositive(l[k], `${where}.${k}`);
  expect(l.p50 as number).toBeLessThanOrEqual(l.p99 as number);
}

interface BenchDocument {
  suite: string;
  scale: string;
  runs: number;
  targetsApply: boolean;
  startedAt: string;
  elapsedSeconds: number;
  machine: { cpus: number };
  targets: { name: string; pass: boolean; value: number }[];
  targetsMet: boolean;
}

/** The header every tiny benchmark document carries, and its targets (named, judged, consistent). */
export function expectTinyDocument(doc: BenchDocument, suite: string, targetNames: string[]): void {
  expect(doc.suite).toBe(suite);
  expect(doc.scale).toBe("tiny");
  expect(doc.runs).toBe(1);
  expect(doc.targetsApply).toBe(false);
  expect(Number.isNaN(Date.parse(doc.startedAt))).toBe(false);
  expectPositive(doc.elapsedSeconds, "elapsedSeconds");
  expect(doc.machine.cpus).toBe(os.cpus().length);
  expect(doc.targets.map((t) => t.name)).toEqual(targetNames);
  for (const t of doc.targets) {
    expect(typeof t.pass, t.name).toBe("boolean");
    expectPositive(t.value, `${t.name}.value`);
  }
  expect(doc.targetsMet).toBe(doc.targets.every((t) => t.pass));
}

/**
 * Runs `strata <args>` (the bench command) in this process, its stdout captured and its stderr
 * (progress) silenced; resolves to what it printed.
 */
export async function runBenchCommand(args: string[]): Promise<string> {
  let printed = "";
  vi.spyOn(process.stdout, "write").mockImplementation((chunk: string | Uint8Array) => {
    printed += String(chunk);
    return true;
  });
  vi.spyOn(process.stderr, "write").mockImplementation(() => true);
  try {
    const program = new Command().exitOverride();
    register(program);
    await program.parseAsync(args, { from: "user" });
  } finally {
    vi.restoreAllMocks();
  }
  return printed;
}

/**
 * `ratio` is `numerator / denominator` up to the rounding of figures (each kept to 4 significant
 * digits): compared relatively, since an absolute tolerance fails for ratios in the hundreds.
 */
export function expectRatioOf(ratio: number, numerator: number, denominator: number, what = "ratio"): void {
  const expected = numerator / denominator;
  expect(Math.abs(ratio - expected) / expected, `${what}: ${ratio} vs ${numerator} / ${denominator}`).toBeLessThan(0.005);
}

/**
 * `strata bench [--tiny] [--runs N] [--out FILE]`: runs the benchmark suites in-process and prints
 * one JSON document, `{ "engine": … }`, keyed by suite so that later suites (e.g. the same
 * workloads over NATS and against JetStream) slot in beside it. Progress goes to stderr.
 */
import type { Command } from "commander";
import { runEngineBench, type EngineBenchOptions } from "../../bench/engine.js";
import { parseRuns } from "../../bench/lib/args.js";
import { emit, stderrProgress } from "../../bench/lib/report.js";
import { StrataError } from "../errors.js";

interface BenchFlags {
  tiny?: boolean;
  runs?: string;
  out?: string;
  dir?: string;
}

export function register(program: Command): void {
  program
    .command("bench")
    .description("run the engine benchmark (in-process store, 1 KiB values) and print its figures as JSON")
    .option("--tiny", "tiny inputs: finishes in seconds, checks that the benchmark works; the numbers mean nothing")
    .option("--runs <n>", "runs per figure; each figure is the median (default 5, or 1 with --tiny)")
    .option("--out <file>", "also write the JSON document to this file")
    .option("--dir <dir>", "where to put the scratch data directories (default: the OS temp dir)")
    .action(async (flags: BenchFlags) => {
      const scale = flags.tiny ? "tiny" : "full";
      let runs: number;
      try {
        runs = parseRuns(flags.runs, scale);
      } catch (err) {
        throw new StrataError("INVALID_ARGUMENT", (err as Error).message);
      }
      const options: EngineBenchOptions = { scale, runs, progress: stderrProgress() };
      if (flags.dir !== undefined) options.dir = flags.dir;
      const engine = await runEngineBench(options);
      emit({ engine }, flags.out);
    });
}

/**
 * The command line shared by every benchmark: `[--tiny] [--runs N] [--dir DIR] [--out FILE]`,
 * validated once here (the edge), how a benchmark module knows it was run directly, and what it
 * then does (`runAsScript`). `checkSuiteOptions` is the same check for suites called in-process.
 */
import fs from "node:fs";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import { emit, stderrProgress } from "./report.js";

/** "tiny" finishes in seconds and only shows that the benchmark works; "full" is for real figures. */
export type Scale = "tiny" | "full";

export interface BenchArgs {
  scale: Scale;
  runs: number;
  dir?: string;
  out?: string;
}

export function parseBenchArgs(args: string[]): BenchArgs {
  const { values } = parseArgs({
    args,
    options: { tiny: { type: "boolean" }, runs: { type: "string" }, dir: { type: "string" }, out: { type: "string" } },
    strict: true,
  });
  const scale: Scale = values.tiny ? "tiny" : "full";
  const out: BenchArgs = { scale, runs: parseRuns(values.runs, scale) };
  if (values.dir !== undefined) out.dir = values.dir;
  if (values.out !== undefined) out.out = values.out;
  return out;
}

/** `--runs` as given (a positive integer) or the scale's default: 1 tiny, 5 full. */
export function parseRuns(text: string | undefined, scale: Scale): number {
  if (text === undefined) return scale === "tiny" ? 1 : 5;
  const runs = Number(text);
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(runs) || runs < 1) throw new Error(`--runs must be a positive integer, got "${text}"`);
  return runs;
}

/** True when the module with this `import.meta.url` is the script node was started with. */
export function isMainModule(moduleUrl: string): boolean {
  const script = process.argv[1];
  if (script === undefined) return false;
  try {
    return moduleUrl === pathToFileURL(fs.realpathSync(script)).href;
  } catch {
    return false;
  }
}

/** What every suite's run function takes. */
export interface SuiteRunOptions {
  scale: Scale;
  runs: number;
  dir?: string;
  progress?: (line: string) => void;
}

/** Scale and runs of a suite called in-process (the command line is checked by parseBenchArgs). */
export function checkSuiteOptions(opts: { scale: unknown; runs: unknown }): void {
  if (opts.scale !== "tiny" && opts.scale !== "full") throw new Error(`scale must be "tiny" or "full", got ${String(opts.scale)}`);
  if (!Number.isSafeInteger(opts.runs) || (opts.runs as number) < 1) throw new Error(`runs must be a positive integer, got ${String(opts.runs)}`);
}

/**
 * A benchmark module run as a script (`bench/<name>.ts [--tiny] …`): runs the suite with the
 * command line's options and progress on stderr, prints (or writes) its JSON, and on failure
 * prints the stack and sets exit code 1.
 */
export async function runAsScript(name: string, run: (options: SuiteRunOptions & { progress: (line: string) => void }) => Promise<unknown>): Promise<void> {
  try {
    const args = parseBenchArgs(process.argv.slice(2));
    const options: SuiteRunOptions & { progress: (line: string) => void } = { scale: args.scale, runs: args.runs, progress: stderrProgress() };
    if (args.dir !== undefined) options.dir = args.dir;
    emit(await run(options), args.out);
  } catch (err) {
    process.stderr.write(`bench/${name}: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = 1;
  }
}

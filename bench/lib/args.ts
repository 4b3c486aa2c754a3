/**
 * The command line shared by every benchmark: `[--tiny] [--runs N] [--dir DIR] [--out FILE]`,
 * validated once here (the edge), and how a benchmark module knows it was run directly.
 */
import fs from "node:fs";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

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

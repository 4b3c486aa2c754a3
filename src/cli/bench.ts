/**
 * `strata bench [--suite engine,net,tier,failover,compact,scale,cache,http | all] [--tiny] [--runs N] [--out FILE] [--dir DIR]`: runs the
 * chosen benchmark suites one after another and prints one JSON document keyed by suite, e.g.
 * `{ "engine": … }` (the default suite) or `{ "net": … }`. Progress goes to stderr.
 *
 * Suites: `engine` (in-process store), `net` (the same workloads over NATS against Strata and
 * against JetStream on one nats-server, which it starts itself with JetStream on a loopback port),
 * `tier` (uploads, cold reads and restores against an S3-compatible server, s3rver, which it starts
 * itself on loopback), `failover` (kill -9 of servers in a cluster of real processes: time until a
 * moved location is written again, takeover bytes, the coordinator's locate rate and restart
 * time; bench/failover.ts), `compact` (a kv overwrite workload compacted: bytes on disk and in a
 * directory tier before and after, and a write load without vs during a compaction; bench/compact.ts),
 * `scale` (one server with 1,000,000 locations of 10 messages: its RSS while writing and after,
 * restart time to the first read, bytes on disk per payload byte, and a coordinator's RSS and locate
 * rate with 1,000,000 assignments; bench/scale.ts), `cache` (kv gets from a client read cache against
 * gets sent to the server, as a ratio, and what following live writes costs the cache; bench/cache.ts),
 * `http` (kv PUT and GET throughput and latency through the HTTP gateway against a direct
 * StrataClient, as ratios; bench/http.ts).
 * A new suite is one entry in SUITES.
 */
import type { Command } from "commander";
import { runCacheBench, type CacheBenchOptions } from "../../bench/cache.js";
import { runCompactBench, type CompactBenchOptions } from "../../bench/compact.js";
import { runEngineBench, type EngineBenchOptions } from "../../bench/engine.js";
import { runFailoverBench, type FailoverBenchOptions } from "../../bench/failover.js";
import { runHttpBench, type HttpBenchOptions } from "../../bench/http.js";
import { parseRuns, type Scale } from "../../bench/lib/args.js";
import { emit, stderrProgress } from "../../bench/lib/report.js";
import { runNetBench, type NetBenchOptions } from "../../bench/net.js";
import { runScaleBench, type ScaleBenchOptions } from "../../bench/scale.js";
import { runTierBench, type TierBenchOptions } from "../../bench/tier.js";
import { StrataError } from "../errors.js";

interface BenchFlags {
  suite: string;
  tiny?: boolean;
  runs?: string;
  out?: string;
  dir?: string;
}

interface SuiteOptions {
  scale: Scale;
  runs: number;
  dir?: string;
  progress: (line: string) => void;
}

const SUITES: Readonly<Record<string, (options: SuiteOptions) => Promise<unknown>>> = {
  engine: (o) => runEngineBench(withDir<EngineBenchOptions>({ scale: o.scale, runs: o.runs, progress: o.progress }, o.dir)),
  net: (o) => runNetBench(withDir<NetBenchOptions>({ scale: o.scale, runs: o.runs, progress: o.progress }, o.dir)),
  tier: (o) => runTierBench(withDir<TierBenchOptions>({ scale: o.scale, runs: o.runs, progress: o.progress }, o.dir)),
  failover: (o) => runFailoverBench(withDir<FailoverBenchOptions>({ scale: o.scale, runs: o.runs, progress: o.progress }, o.dir)),
  compact: (o) => runCompactBench(withDir<CompactBenchOptions>({ scale: o.scale, runs: o.runs, progress: o.progress }, o.dir)),
  scale: (o) => runScaleBench(withDir<ScaleBenchOptions>({ scale: o.scale, runs: o.runs, progress: o.progress }, o.dir)),
  http: (o) => runHttpBench(withDir<HttpBenchOptions>({ scale: o.scale, runs: o.runs, progress: o.progress }, o.dir)),
  cache: (o) => runCacheBench(withDir<CacheBenchOptions>({ scale: o.scale, runs: o.runs, progress: o.progress }, o.dir)),
};

const DEFAULT_SUITE = "engine";

function withDir<T extends { dir?: string }>(options: T, dir: string | undefined): T {
  return dir === undefined ? options : { ...options, dir };
}

/** `--suite` as given: comma-separated names of SUITES, or "all"; validated here, at the edge. */
export function parseSuites(text: string): string[] {
  if (text === "all") return Object.keys(SUITES);
  const names = text.split(",").map((s) => s.trim());
  const unknown = names.filter((n) => !Object.hasOwn(SUITES, n));
  if (names.length === 0 || unknown.length > 0) {
    throw new StrataError("INVALID_ARGUMENT", `--suite must name suites among ${Object.keys(SUITES).join(", ")} (comma-separated) or "all", got "${text}"`);
  }
  return [...new Set(names)];
}

export function register(program: Command): void {
  program
    .command("bench")
    .description("run benchmark suites (engine: in-process store; net: Strata vs JetStream over NATS; tier: object storage against s3rver; failover: kill -9 recovery and the coordinator; compact: space given back by compaction and writes while it runs; scale: 1,000,000 locations on one server, its memory and restart time; cache: kv gets from a client read cache vs from the server; http: kv PUT/GET through the HTTP gateway vs a direct client) and print their figures as JSON")
    .option("--suite <names>", `suites to run, comma-separated (${Object.keys(SUITES).join(", ")}) or "all"`, DEFAULT_SUITE)
    .option("--tiny", "tiny inputs: finishes in seconds, checks that the benchmark works; the numbers mean nothing")
    .option("--runs <n>", "runs per figure; each figure is the median (default 5, or 1 with --tiny)")
    .option("--out <file>", "also write the JSON document to this file")
    .option("--dir <dir>", "where to put the scratch data directories (default: the OS temp dir)")
    .action(async (flags: BenchFlags) => {
      const scale: Scale = flags.tiny ? "tiny" : "full";
      const suites = parseSuites(flags.suite);
      let runs: number;
      try {
        runs = parseRuns(flags.runs, scale);
      } catch (err) {
        throw new StrataError("INVALID_ARGUMENT", (err as Error).message);
      }
      const progress = stderrProgress();
      const doc: Record<string, unknown> = {};
      for (const name of suites) {
        const options: SuiteOptions = { scale, runs, progress: (line) => progress(`${name}: ${line}`) };
        if (flags.dir !== undefined) options.dir = flags.dir;
        doc[name] = await SUITES[name]!(options);
      }
      emit(doc, flags.out);
    });
}

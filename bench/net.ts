/**
 * The net benchmark: the same workloads against Strata over core NATS and against NATS JetStream,
 * on the same nats-server in one run, printed side by side with the ratio Strata / JetStream as one
 * JSON document (see net-workloads.ts for the workloads, net-report.ts for the document).
 *
 * Strata runs twice: with its default durability (`fsync: "always"`: an ack follows the fdatasync
 * of its record) and with `fsync: "interval"`, which is like-for-like with JetStream 2.9, whose
 * acks precede its fsync (it syncs every 2 minutes). Each Strata mode gets a fresh data directory
 * and a strata server in a child process for every run; JetStream gets fresh streams and buckets.
 * Runs alternate the order of the systems, so drift in the machine's speed spreads over all of
 * them, and every figure is the median of its runs.
 *
 * `npx tsx bench/net.ts [--tiny] [--runs N] [--dir DIR] [--out FILE]` prints the document on
 * stdout (progress on stderr). It starts its own nats-server with JetStream on a loopback port
 * (src/testing/nats-server.ts) and ends only the processes it started. The test suite runs it at
 * tiny scale so that it cannot rot; its numbers only mean something at full scale.
 */
import { connect } from "nats";
import { startNatsServer, type RunningNatsServer } from "../src/testing/nats-server.js";
import { checkSuiteOptions, isMainModule, runAsScript, type Scale } from "./lib/args.js";
import { withTempDir } from "./lib/fs.js";
import { LagProbe } from "./lib/lag-probe.js";
import { benchHeader, targetsTail, type MachineInfo, type TargetResult } from "./lib/report.js";
import { measureFdatasync, type FdatasyncResult } from "./lib/fdatasync.js";
import { median } from "./lib/stats.js";
import { buildCeiling, buildFdatasyncRows, buildTable, echoFigures, judgeOneInFlight, judgePacedEveryRun, judgeTargets, systemFigures, type CeilingRow, type EchoFigures, type SystemFigures, type TableRow } from "./net-report.js";
import { IDLE_RSS_PARAMS, idleRssTargets, measureIdleRss, type IdleRssFigures } from "./net-rss.js";
import { startEchoSystem, startJetStreamSystem, startStrataSystem, type BenchSystem, type SystemName } from "./net-systems.js";
import { runMetricsOverhead, type MetricsOverheadFigures } from "./net-metrics.js";
import { PARAMS, runEcho, runNewLocations, runSystem, type EchoRun, type NetBenchParams, type SystemRun } from "./net-workloads.js";

export type { Scale };

export interface NetBenchOptions {
  scale: Scale;
  runs: number;
  /** Parent of the strata servers' scratch data directories (default: the OS temp dir); removed afterwards. */
  dir?: string;
  /** Receives one line per step; default: silent. */
  progress?: (line: string) => void;
  /** Write V8 CPU profiles of the strata server children here (`node --cpu-prof`). */
  cpuProfDir?: string;
}

export interface NetBenchResult {
  suite: "net";
  scale: Scale;
  runs: number;
  startedAt: string;
  elapsedSeconds: number;
  machine: MachineInfo;
  setup: {
    natsServer: { version: string; maxPayloadBytes: number; jetstream: string };
    strataServer: string;
    client: string;
    systems: Record<SystemName, string>;
  };
  notes: string[];
  params: NetBenchParams;
  /** Medians (unit in each row), side by side; ratio = Strata / JetStream for each Strata mode. */
  table: TableRow[];
  /** Core NATS request/reply to a trivial responder: the most any request/reply service can do here. */
  ceiling: CeilingRow[];
  figures: Record<SystemName, SystemFigures> & { echo: EchoFigures };
  /** fdatasync p50 (µs) of a 1 KiB overwrite on the data directory's disk, per run and median: the 1-in-flight targets' floor. */
  fdatasyncP50Us: { runs: number[]; median: number };
  /** fdatasync latency histograms (p50/p99/p99.9/max) on the same disk, overwrite vs growing the file, medians of runs. */
  fdatasync: CeilingRow[];
  /** Resident memory of nats-server, a strata server and a coordinator, idle after start and after a load (bench/net-rss.ts). */
  idleRss: IdleRssFigures;
  /** Append at 256 and at 1 in flight without metrics vs with metrics scraped every second (bench/net-metrics.ts). */
  metricsOverhead: MetricsOverheadFigures;
  targets: TargetResult[];
  targetsMet: boolean;
  /** False at tiny scale, where the targets are reported but mean nothing. */
  targetsApply: boolean;
}

const SYSTEMS: readonly SystemName[] = ["strataFsyncAlways", "jetstream", "strataFsyncInterval"];

const SYSTEM_LABELS: Record<SystemName, string> = {
  strataFsyncAlways: 'Strata, default durability: fsync "always" (every ack follows the fdatasync of its record; concurrent writes share one, group commit)',
  strataFsyncInterval: 'Strata with fsync "interval" (ack once written to the OS, fdatasync every second): like-for-like with JetStream 2.9',
  jetstream: "NATS JetStream (file storage, 1 replica, direct get on): acks before it fsyncs (syncs every 2 minutes by default)",
};

const NOTES = [
  "Strata runs twice, as two columns: 'strataFsyncAlways' = its default durability (fsync always: every ack follows the fdatasync of its record), 'strataFsyncInterval' = fsync interval (acks once written to the OS, fdatasync every second; not fsync'd before the ack, like JetStream 2.9.10, which syncs every 2 minutes). Compare strataFsyncInterval with jetstream for like-for-like durability.",
  "ratio = Strata median / JetStream median, for each Strata mode; for rows with better = 'lower' (latency, CPU) a ratio below 1 favours Strata.",
  "The strata server runs in a child process (node, a fresh one with a fresh data dir per mode and run), as nats-server (with JetStream inside) runs in its own; the benchmark client is a third process. All share the machine's cores, so the client's CPU counts against the servers'.",
  "Plain append at 256 in flight (256 concurrent StrataClient.append calls, one message each, vs nats.js js.publish) is the main row. Strata's client coalesces the calls issued together into batch requests of up to coalesceItemsMax (128), as Kafka's producer batches, while each call keeps its own ack, error and order; the appendMany row sends 100 messages per explicit request and is labelled as such.",
  "Before each system's run, params.warmupOps appends and kv puts at 256 in flight, as many gets, up to 3,000 appends, gets and kv gets one at a time, and three reads of the whole warm-up stream warm both systems up, so the rows measure the steady state.",
  "Latencies are per operation, from the call to its ack. The paced row is an open-loop load (sends on schedule whatever the acks do), timed from each message's due time so that stalls are not hidden; figures.*.paced.sendLagMsMax says how late the sender itself got, and figures.*.paced.machineLagMsMax how late a separate idle process's 2 ms timers fired meanwhile (bench/lib/lag-probe.ts): the machine's own stalls, a floor under any p99.9 timed this way.",
  "Read back: Strata getAll (streamed batches with flow control) vs a JetStream ordered consumer (consume() with max_messages 5000, its fastest setting here). Random get: Strata get(seq) vs JetStream direct get (allow_direct streams). KV: StrataClient.kv vs js.views.kv (history 1, file storage).",
  "The 8 MiB message exceeds nats-server's default max_payload (1 MiB): Strata's client uploads it in chunks, JetStream's publish is refused (the table's note says so; no figure).",
  "figures.*.cpuUsPerOp: CPU µs per operation of the client process, the strata server child and nats-server, from process.cpuUsage() and /proc/<pid>/stat (USER_HZ = 100); threads included.",
  "MB = 10^6 payload bytes. Every figure is the median of its runs (figures keep each run's value); runs rotate the order of the systems.",
];

async function natsServerInfo(url: string): Promise<{ version: string; maxPayloadBytes: number }> {
  const nc = await connect({ servers: url });
  try {
    return { version: nc.info?.version ?? "unknown", maxPayloadBytes: nc.info?.max_payload ?? 0 };
  } finally {
    await nc.close();
  }
}

async function runOnce(
  name: SystemName,
  nats: RunningNatsServer,
  p: NetBenchParams,
  opts: NetBenchOptions,
  progress: (line: string) => void,
  probe: LagProbe,
): Promise<SystemRun> {
  const run = async <T>(system: BenchSystem, work: (system: BenchSystem) => Promise<T>) => {
    try {
      return await work(system);
    } finally {
      await system.close();
    }
  };
  const all = (system: BenchSystem) => runSystem(system, p, progress, probe);
  // New locations (and, for Strata, the coordinated append) on a system of their own: Strata's
  // with a coordinator child, JetStream's adding a stream per location.
  const coordinated = (append: boolean) => (system: BenchSystem) => runNewLocations(system, p, progress, append);
  if (name === "jetstream") {
    const main = await run(await startJetStreamSystem(nats.url, nats.pid), all);
    return { ...main, ...(await run(await startJetStreamSystem(nats.url, nats.pid), coordinated(false))) };
  }
  const prof = opts.cpuProfDir !== undefined ? { cpuProfDir: opts.cpuProfDir } : {};
  const main = await withTempDir(`strata-bench-net-${name}`, opts.dir, async (dir) => run(await startStrataSystem({ name, natsUrl: nats.url, natsPid: nats.pid, dir, ...prof }), all));
  const extra = await withTempDir(`strata-bench-net-${name}-coord`, opts.dir, async (dir) =>
    run(await startStrataSystem({ name, natsUrl: nats.url, natsPid: nats.pid, dir, coordinated: true, ...prof }), coordinated(true)),
  );
  return { ...main, ...extra };
}

export async function runNetBench(opts: NetBenchOptions): Promise<NetBenchResult> {
  checkSuiteOptions(opts);
  const p = PARAMS[opts.scale];
  const progress = opts.progress ?? (() => undefined);
  const startedAt = new Date();
  const started = performance.now();
  const nats = await startNatsServer({ jetstream: true });
  let probe: LagProbe | undefined;
  try {
    probe = await LagProbe.start();
    const info = await natsServerInfo(nats.url);
    const runs: Record<SystemName, SystemRun[]> = { strataFsyncAlways: [], strataFsyncInterval: [], jetstream: [] };
    const echoRuns: EchoRun[] = [];
    const fdatasyncRuns: number[] = [];
    const fdatasyncResults: FdatasyncResult[] = [];
    for (let r = 0; r < opts.runs; r++) {
      progress(`run ${r + 1} of ${opts.runs}`);
      const echo = await startEchoSystem(nats.url, nats.pid);
      try {
        echoRuns.push(await runEcho(echo, p, progress));
      } finally {
        await echo.close();
      }
      // The floor of an fsync'd ack at 1 in flight, on the disk the strata servers write to.
      const sync = await withTempDir("strata-bench-net-fdatasync", opts.dir, (dir) => measureFdatasync(dir, { count: opts.scale === "tiny" ? 20 : 500 }));
      fdatasyncRuns.push(sync.overwrite.p50);
      fdatasyncResults.push(sync);
      // Rotate the order every run, so no system always goes first (or right after another).
      for (let k = 0; k < SYSTEMS.length; k++) {
        const name = SYSTEMS[(k + r) % SYSTEMS.length]!;
        runs[name].push(await runOnce(name, nats, p, opts, progress, probe));
      }
    }
    const figures = {
      strataFsyncAlways: systemFigures(runs.strataFsyncAlways),
      strataFsyncInterval: systemFigures(runs.strataFsyncInterval),
      jetstream: systemFigures(runs.jetstream),
      echo: echoFigures(echoRuns),
    };
    const table = buildTable({ strataFsyncAlways: figures.strataFsyncAlways, strataFsyncInterval: figures.strataFsyncInterval, jetstream: figures.jetstream });
    const idleRss = await withTempDir("strata-bench-net-rss", opts.dir, (dir) => measureIdleRss({ natsUrl: nats.url, natsPid: nats.pid, dir, params: IDLE_RSS_PARAMS[opts.scale], progress }));
    const metricsOverhead = await runMetricsOverhead({ natsUrl: nats.url, natsPid: nats.pid, ...(opts.dir !== undefined ? { dir: opts.dir } : {}), p, runs: opts.runs, progress });
    const fdatasyncP50Us = { runs: fdatasyncRuns, median: median(fdatasyncRuns) };
    const targets = [...judgeTargets(table), ...judgePacedEveryRun(figures), ...judgeOneInFlight(table, figures, figures.echo, fdatasyncP50Us.median), ...idleRssTargets(idleRss)];
    return {
      ...benchHeader("net", opts, startedAt, started),
      setup: {
        natsServer: { ...info, jetstream: "enabled in the same nats-server, file store in its temp dir" },
        strataServer:
          "child process per mode and run: node bench/net-server-child.ts (startServer with a fresh data dir), pinned by the client (no coordinator); for the new-locations and coordinated append rows a second one registered with a coordinator child (startCoordinator, fresh state), the client locating through it",
        client: "this process: one nats.js connection per system (StrataClient for Strata; jetstream() / jetstreamManager() / views.kv() for JetStream)",
        systems: SYSTEM_LABELS,
      },
      notes: NOTES,
      params: p,
      table,
      ceiling: buildCeiling(figures.echo),
      idleRss,
      metricsOverhead,
      figures,
      fdatasyncP50Us,
      fdatasync: buildFdatasyncRows(fdatasyncResults),
      ...targetsTail(targets, opts.scale),
    };
  } finally {
    await probe?.stop();
    await nats.stop();
  }
}

if (isMainModule(import.meta.url)) {
  await runAsScript("net", (options) => {
    const withProf: NetBenchOptions = { ...options };
    if (process.env.STRATA_BENCH_CPU_PROF_DIR) withProf.cpuProfDir = process.env.STRATA_BENCH_CPU_PROF_DIR;
    return runNetBench(withProf);
  });
}

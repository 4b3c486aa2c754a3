/**
 * The scale benchmark: one strata server holding many small locations (full scale: 1,000,000
 * streams of 10 messages each), written as many producers would write them, and a coordinator
 * holding as many assignments. Measured:
 * - server RSS while writing (sampled every `RSS_SAMPLE_MS`; the largest sample) and after (idle
 *   `idleMs`), as VmRSS and its parts RssAnon (the process's own memory: V8 heap, malloc) and
 *   RssFile (mapped file pages: the node binary's code, and LMDB's memory-mapped index, whose
 *   pages the kernel can drop and read again at will);
 * - restart time: kill -9 of the server, then from spawning it again to the first answered get of
 *   a random location (asked every few ms from the spawn), and to its "ready" log line;
 * - bytes on disk (allocated blocks of the data directory: segments and LMDB index) per payload byte;
 * - the coordinator: its RSS and locate throughput with as many assigned locations, its state
 *   written directly before it starts (bench/failover-coord.ts's writeAssignments).
 *
 * Write pattern: `writers` producers over one StrataClient connection (a pinned standalone server,
 * as `strata up` places every location on its one server); each takes the next location and
 * writes its messages in one appendMany, waiting for the ack (fsync "always", the default): a
 * producer that batches what it has for a location. (10 M single appends, coalesced by the client
 * across locations, take about twice as long here: 9,000 vs 18,000 msgs/s on this machine.) Server and coordinator run the CLI transpiled to JavaScript (bench/net-rss.ts: no tsx
 * loader in their memory), each in its own process; only the processes started here are signalled.
 *
 * `npx tsx bench/scale.ts [--tiny] [--dir DIR] [--out FILE]` (`strata bench --suite scale`): always
 * one run, whatever `--runs` says (the full one takes minutes: progress on stderr every 10 s); the
 * JSON document on stdout.
 */
import path from "node:path";
import { connect, type NatsConnection } from "nats";
import { StrataClient } from "../src/net/client/client.js";
import { decodeUntrusted, encode, isPlainMap } from "../src/net/wire/wire-codec.js";
import { startNatsServer } from "../src/testing/nats-server.js";
import { checkSuiteOptions, isMainModule, runAsScript, type Scale } from "./lib/args.js";
import { diskUsage, withTempDir } from "./lib/fs.js";
import { runInFlight } from "./lib/load.js";
import { judge, machineInfo, targetsTail, type MachineInfo, type TargetResult } from "./lib/report.js";
import { prng } from "./lib/stats.js";
import { coordLocation, writeAssignments } from "./failover-coord.js";
import { IDLE_MS, readRss, startCli, transpileSources, type CliProcess, type RssKb } from "./net-rss.js";

export interface ScaleParams {
  locations: number;
  messagesPerLocation: number;
  valueBytes: number;
  /** Producers writing at once (each one location at a time, one appendMany in flight). */
  writers: number;
  /** How long a process is left alone before its "idle" RSS is read. */
  idleMs: number;
  coordAssignments: number;
  coordServers: number;
  locates: number;
  locatesInFlight: number;
}

export const SCALE_PARAMS: Record<Scale, ScaleParams> = {
  tiny: { locations: 300, messagesPerLocation: 3, valueBytes: 100, writers: 64, idleMs: 300, coordAssignments: 2000, coordServers: 4, locates: 500, locatesInFlight: 32 },
  full: { locations: 1_000_000, messagesPerLocation: 10, valueBytes: 100, writers: 256, idleMs: IDLE_MS, coordAssignments: 1_000_000, coordServers: 16, locates: 100_000, locatesInFlight: 256 },
};

const SERVER_ID = "scale";
const RSS_SAMPLE_MS = 1000;
const PROGRESS_MS = 10_000;
const RESTART_TIMEOUT_MS = 120_000;
const COORD_LEASE_MS = 600_000;

export interface ScaleBenchOptions {
  scale: Scale;
  runs: number;
  dir?: string;
  progress?: (line: string) => void;
  /** Overrides of the scale's parameters (tests, or a partial run by hand). */
  params?: Partial<ScaleParams>;
}

export interface RssSummary {
  unit: "kB";
  max: RssKb;
  samples: number;
}

export interface ScaleBenchResult {
  suite: "scale";
  scale: Scale;
  runs: number;
  startedAt: string;
  elapsedSeconds: number;
  machine: MachineInfo;
  params: ScaleParams;
  notes: string[];
  write: { messages: number; payloadBytes: number; seconds: number; msgsPerSec: number };
  server: {
    /** Largest of each of VmRSS, RssAnon, RssFile (taken separately) over the samples while writing. */
    rssWhileWriting: RssSummary;
    rssAfterWrite: RssKb;
    /**
     * After kill -9 (toFirstGetMs, toReadyLogMs); after a graceful stop (SIGTERM: the index is
     * closed cleanly and checksummed, and the next open verifies the checksum); emptyToFirstGetMs:
     * a server on an empty data directory (what node and the CLI cost).
     */
    restart: { toFirstGetMs: number; toReadyLogMs: number; afterStopToFirstGetMs: number; emptyToFirstGetMs: number; rssAfterRestart: RssKb };
    disk: { allocatedBytes: number; apparentBytes: number; files: number; bytesPerPayloadByte: number };
  };
  coordinator: { assignments: number; writeStateSeconds: number; rssIdle: RssKb; rssAfterLocates: RssKb; locatesPerSec: number };
  targets: TargetResult[];
  targetsMet: boolean;
  targetsApply: boolean;
}

const NOTES = [
  "RSS in kB from /proc/<pid>/status: VmRSS = RssAnon + RssFile (+ RssShmem). RssFile holds the node binary's code (~40 MB in any node process, shared with every other one through the page cache) and the pages of LMDB's memory-mapped index that were touched, which the kernel reclaims under memory pressure; RssAnon is the process's own memory. The targets judge VmRSS; both parts are printed.",
  "Restart: the server is killed with SIGKILL after the writes, then spawned again; toFirstGetMs runs from the spawn to the first answered get of a random location (a client asking every few ms), toReadyLogMs to its ready line. Both include starting node and loading the CLI (~0.3 s here).",
  "Bytes on disk: allocated blocks (st_blocks) of the whole data directory (segments, LMDB index) divided by the payload bytes written (values only, no keys or headers).",
];

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const NAN_RSS: RssKb = { vmRssKb: Number.NaN, rssAnonKb: Number.NaN, rssFileKb: Number.NaN };
const rssOf = (pid: number): RssKb => readRss(pid) ?? NAN_RSS;

/** Location `i` of the server part: spread over 1000 prefixes, as tenants' locations would be. */
export function scaleLocation(i: number): string {
  return `sc/${i % 1000}/${i}`;
}

function valueFor(location: number, seq: number, bytes: number): Uint8Array {
  const v = new Uint8Array(bytes);
  const dv = new DataView(v.buffer);
  dv.setUint32(0, location);
  dv.setUint32(4, seq);
  return v;
}

/** Samples a process's RSS until stopped; keeps the largest of each figure. */
function sampleRss(pid: () => number): { stop(): RssSummary } {
  const max: RssKb = { vmRssKb: 0, rssAnonKb: 0, rssFileKb: 0 };
  let samples = 0;
  const take = () => {
    const r = readRss(pid());
    if (r === undefined) return;
    samples++;
    max.vmRssKb = Math.max(max.vmRssKb, r.vmRssKb);
    max.rssAnonKb = Math.max(max.rssAnonKb, r.rssAnonKb);
    max.rssFileKb = Math.max(max.rssFileKb, r.rssFileKb);
  };
  const timer = setInterval(take, RSS_SAMPLE_MS);
  return {
    stop: () => {
      clearInterval(timer);
      take();
      return { unit: "kB", max: samples > 0 ? max : NAN_RSS, samples };
    },
  };
}

async function writeAll(client: StrataClient, p: ScaleParams, progress: (line: string) => void, serverPid: () => number): Promise<number> {
  const started = performance.now();
  let done = 0;
  const ticker = setInterval(() => {
    const s = (performance.now() - started) / 1000;
    const r = readRss(serverPid());
    const total = p.locations * p.messagesPerLocation;
    progress(`scale: ${done}/${total} messages (${((100 * done) / total).toFixed(1)}%), ${Math.round(done / s)} msgs/s, server RSS ${r ? `${Math.round(r.vmRssKb / 1024)} MiB (anon ${Math.round(r.rssAnonKb / 1024)}, file ${Math.round(r.rssFileKb / 1024)})` : "?"}`);
  }, PROGRESS_MS);
  try {
    await runInFlight(p.writers, p.locations, async (i) => {
      const stream = client.stream(scaleLocation(i));
      const results = await stream.appendMany(Array.from({ length: p.messagesPerLocation }, (_, m) => ({ message: { value: valueFor(i, m + 1, p.valueBytes) } })));
      const failed = results.find((r) => !r.ok);
      if (failed) throw new Error(`appendMany to ${scaleLocation(i)} failed: ${JSON.stringify(failed)}`);
      done += p.messagesPerLocation;
    });
  } finally {
    clearInterval(ticker);
  }
  return (performance.now() - started) / 1000;
}

/** Spawns the server again and asks a random location's last message until it answers. */
async function restartAndTime(start: () => Promise<CliProcess>, nc: NatsConnection, p: ScaleParams, pick: () => number, written = true): Promise<{ proc: CliProcess; toFirstGetMs: number; toReadyLogMs: number }> {
  // Retries every 1–5 ms while nobody answers (no responders), for as long as a restart may take.
  const client = new StrataClient(nc, { server: SERVER_ID, timeoutMs: RESTART_TIMEOUT_MS, limits: { retryBackoffMinMs: 1, retryBackoffMaxMs: 5 } });
  try {
    const i = pick();
    const t0 = performance.now();
    let toReadyLogMs = Number.NaN;
    const starting = start().then((proc) => {
      toReadyLogMs = performance.now() - t0;
      return proc;
    });
    const got = await client.stream(scaleLocation(i)).get(p.messagesPerLocation);
    const toFirstGetMs = performance.now() - t0;
    const want = valueFor(i, p.messagesPerLocation, p.valueBytes);
    if (!written) {
      if (got !== undefined) throw new Error(`a server on an empty directory returned a message for ${scaleLocation(i)}`);
    } else if (got === undefined || Buffer.compare(Buffer.from(got.value), Buffer.from(want)) !== 0) throw new Error(`after the restart, ${scaleLocation(i)} seq ${p.messagesPerLocation} is not the value written`);
    const proc = await starting;
    return { proc, toFirstGetMs, toReadyLogMs };
  } finally {
    client.close();
  }
}

async function measureCoordinator(main: string, natsUrl: string, nc: NatsConnection, dir: string, p: ScaleParams, progress: (line: string) => void): Promise<ScaleBenchResult["coordinator"]> {
  progress(`scale: writing ${p.coordAssignments} coordinator assignments`);
  const writeStateSeconds = await writeAssignments(dir, p.coordAssignments, p.coordServers);
  const proc = await startCli(main, ["coordinator", "--data", dir, "--nats", natsUrl, "--lease-ms", String(COORD_LEASE_MS)]);
  try {
    await sleep(p.idleMs);
    const rssIdle = rssOf(proc.pid);
    const random = prng(0x5ca1e);
    const ms = await runInFlight(p.locatesInFlight, p.locates, async () => {
      const location = coordLocation(Math.floor(random() * p.coordAssignments));
      const msg = await nc.request("strata.coord.locate", encode({ location }), { timeout: 10_000 });
      const body = decodeUntrusted(msg.data, "locate reply");
      if (!isPlainMap(body) || typeof body.server !== "string") throw new Error(`locate of a known location answered ${msg.headers?.get("Strata-Error") ?? JSON.stringify(body)}`);
    });
    await sleep(p.idleMs);
    const rssAfterLocates = rssOf(proc.pid);
    const locatesPerSec = (p.locates * 1000) / ms;
    progress(`scale: coordinator with ${p.coordAssignments} assignments: ${Math.round(rssIdle.vmRssKb / 1024)} MiB idle, ${Math.round(locatesPerSec)} locates/s`);
    return { assignments: p.coordAssignments, writeStateSeconds: Number(writeStateSeconds.toFixed(1)), rssIdle, rssAfterLocates, locatesPerSec: Math.round(locatesPerSec) };
  } finally {
    await proc.stop();
  }
}

export async function runScaleBench(opts: ScaleBenchOptions): Promise<ScaleBenchResult> {
  checkSuiteOptions(opts);
  const p: ScaleParams = { ...SCALE_PARAMS[opts.scale], ...opts.params };
  const progress = opts.progress ?? (() => undefined);
  const startedAt = new Date();
  const started = performance.now();
  const nats = await startNatsServer();
  try {
    return await withTempDir("strata-bench-scale", opts.dir, async (dir) => {
      const main = transpileSources(path.join(dir, "build"));
      const data = path.join(dir, "server");
      const startServer = () => startCli(main, ["server", "--id", SERVER_ID, "--standalone", "--data", data, "--nats", nats.url]);
      let server = await startServer();
      const nc = await connect({ servers: nats.url, name: "strata-bench-scale" });
      try {
        const client = new StrataClient(nc, { server: SERVER_ID, timeoutMs: 60_000 });
        progress(`scale: writing ${p.locations} locations x ${p.messagesPerLocation} messages of ${p.valueBytes} B, ${p.writers} writers`);
        const sampler = sampleRss(() => server.pid);
        let seconds: number;
        try {
          seconds = await writeAll(client, p, progress, () => server.pid);
        } finally {
          client.close();
        }
        const rssWhileWriting = sampler.stop();
        await sleep(p.idleMs);
        const rssAfterWrite = rssOf(server.pid);
        const messages = p.locations * p.messagesPerLocation;
        progress(`scale: wrote ${messages} messages in ${seconds.toFixed(1)} s; server RSS max ${Math.round(rssWhileWriting.max.vmRssKb / 1024)} MiB, after ${Math.round(rssAfterWrite.vmRssKb / 1024)} MiB`);

        await server.kill9();
        const disk = diskUsage(data);
        const payloadBytes = messages * p.valueBytes;
        const random = prng(0xdecade);
        const restarted = await restartAndTime(startServer, nc, p, () => Math.floor(random() * p.locations));
        server = restarted.proc;
        await sleep(p.idleMs);
        const rssAfterRestart = rssOf(server.pid);
        progress(`scale: restart to first get ${Math.round(restarted.toFirstGetMs)} ms (ready line ${Math.round(restarted.toReadyLogMs)} ms)`);
        await server.stop();
        const graceful = await restartAndTime(startServer, nc, p, () => Math.floor(random() * p.locations));
        server = graceful.proc;
        progress(`scale: restart after a graceful stop to first get ${Math.round(graceful.toFirstGetMs)} ms`);
        await server.stop();
        const empty = path.join(dir, "empty");
        const startEmpty = () => startCli(main, ["server", "--id", SERVER_ID, "--standalone", "--data", empty, "--nats", nats.url]);
        const emptyRun = await restartAndTime(startEmpty, nc, p, () => 0, false);
        await emptyRun.proc.stop();

        const coordinator = await measureCoordinator(main, nats.url, nc, path.join(dir, "coordinator"), p, progress);
        const mib = (kb: number) => Number((kb / 1024).toFixed(1));
        const targets = [
          judge({ name: "serverRssWhileWriting", figure: "server.rssWhileWriting.max.vmRssKb", op: "<", threshold: 256, unit: "MiB" }, mib(rssWhileWriting.max.vmRssKb)),
          judge({ name: "serverRssAfterWrite", figure: "server.rssAfterWrite.vmRssKb", op: "<", threshold: 256, unit: "MiB" }, mib(rssAfterWrite.vmRssKb)),
          judge({ name: "restartToFirstGet", figure: "server.restart.toFirstGetMs", op: "<", threshold: 1000, unit: "ms" }, Math.round(restarted.toFirstGetMs)),
        ];
        return {
          suite: "scale",
          scale: opts.scale,
          runs: 1,
          startedAt: startedAt.toISOString(),
          elapsedSeconds: Number(((performance.now() - started) / 1000).toFixed(1)),
          machine: machineInfo(),
          params: p,
          notes: NOTES,
          write: { messages, payloadBytes, seconds: Number(seconds.toFixed(1)), msgsPerSec: Math.round(messages / seconds) },
          server: {
            rssWhileWriting,
            rssAfterWrite,
            restart: { toFirstGetMs: Math.round(restarted.toFirstGetMs), toReadyLogMs: Math.round(restarted.toReadyLogMs), afterStopToFirstGetMs: Math.round(graceful.toFirstGetMs), emptyToFirstGetMs: Math.round(emptyRun.toFirstGetMs), rssAfterRestart },
            disk: { ...disk, bytesPerPayloadByte: Number((disk.allocatedBytes / payloadBytes).toFixed(2)) },
          },
          coordinator,
          ...targetsTail(targets, opts.scale),
        };
      } finally {
        await nc.close();
        await server.stop();
      }
    });
  } finally {
    await nats.stop();
  }
}

if (isMainModule(import.meta.url)) {
  // A partial run by hand: STRATA_BENCH_SCALE_LOCATIONS=N writes N locations (and assigns N).
  const n = Number(process.env.STRATA_BENCH_SCALE_LOCATIONS ?? Number.NaN);
  const params: Partial<ScaleParams> = Number.isSafeInteger(n) && n > 0 ? { locations: n, coordAssignments: n } : {};
  await runAsScript("scale", (options) => runScaleBench({ ...options, params }));
}

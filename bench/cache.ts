/**
 * The kv read cache benchmark (src/net/client/kv-cache.ts): gets served by `kv(loc).cache()`
 * against the same gets sent to the server, on one kv, in one run, as a ratio.
 *
 * It starts a nats-server (loopback, src/testing/nats-server.ts) and a strata server in this
 * process with the default limits (so values above `changeInlineBytesMax`, 256 bytes, are left out
 * of the change feed), fills one kv with `keys` keys of `valueBytes`, and per run:
 * 1. uncached: `reads` kv.get of random keys, `inFlight` in flight → gets/s;
 * 2. cached: a new cache, the time until it is `ready` (its replay of the kv), then the same gets
 *    from the cache → gets/s, the ratio cached ÷ uncached, and the bytes it holds per entry;
 * 3. live: `liveWrites` sets of `valueBytes` from another client while the cache follows them:
 *    the `changes` requests its watch sent to fetch the values the feed left out (per write) and
 *    the time from the first write until the cache holds the last one.
 * Every figure is the median of `runs` runs. `npx tsx bench/cache.ts [--tiny] [--runs N]` prints
 * one JSON document on stdout; `strata bench --suite cache` runs it too, and the test suite runs it
 * at tiny scale. The benchmark checks that every cached get returned the value written.
 */
import { connect } from "nats";
import { StrataClient } from "../src/net/client/client.js";
import { startServer } from "../src/net/server/server.js";
import { decodeMap } from "../src/net/wire/wire-codec.js";
import { Store } from "../src/store.js";
import { startNatsServer } from "../src/testing/nats-server.js";
import { checkSuiteOptions, isMainModule, runAsScript, type Scale } from "./lib/args.js";
import { makeTempDir, removeDir } from "./lib/fs.js";
import { runInFlight } from "./lib/load.js";
import { benchHeader, judge, targetsTail, type MachineInfo, type TargetResult, type TargetSpec } from "./lib/report.js";
import { figure, perSecond, prng, type Figure } from "./lib/stats.js";

export type { Scale };

export interface CacheBenchOptions {
  scale: Scale;
  runs: number;
  dir?: string;
  progress?: (line: string) => void;
}

export interface CacheBenchParams {
  keys: number;
  valueBytes: number;
  reads: number;
  inFlight: number;
  liveWrites: number;
}

const PARAMS: Readonly<Record<Scale, CacheBenchParams>> = {
  tiny: { keys: 200, valueBytes: 1024, reads: 2000, inFlight: 16, liveWrites: 100 },
  full: { keys: 10_000, valueBytes: 1024, reads: 200_000, inFlight: 64, liveWrites: 5000 },
};

export interface CacheBenchResult {
  suite: "cache";
  scale: Scale;
  runs: number;
  startedAt: string;
  elapsedSeconds: number;
  machine: MachineInfo;
  params: CacheBenchParams;
  figures: {
    uncachedGetsPerSec: Figure;
    cachedGetsPerSec: Figure;
    cachedToUncachedRatio: Figure;
    readyMs: Figure;
    cacheBytesPerEntry: Figure;
    changesRequestsPerLiveWrite: Figure;
    liveCatchUpMs: Figure;
  };
  targets: TargetResult[];
  targetsMet: boolean;
  targetsApply: boolean;
}

const TARGETS: readonly TargetSpec[] = [{ name: "cachedToUncachedRatio", figure: "figures.cachedToUncachedRatio.median", op: ">=", threshold: 10, unit: "ratio" }];

const LOCATION = "bench/cache";
const SERVER_ID = "bench-cache";

export async function runCacheBench(options: CacheBenchOptions): Promise<CacheBenchResult> {
  checkSuiteOptions(options);
  const params = PARAMS[options.scale];
  const progress = options.progress ?? (() => undefined);
  const started = performance.now();
  const startedAt = new Date();
  const dir = makeTempDir("strata-bench-cache", options.dir);
  const nats = await startNatsServer();
  const store = await Store.open({ dir, id: SERVER_ID });
  const nc = await connect({ servers: nats.url });
  const writerNc = await connect({ servers: nats.url });
  const server = await startServer({ standalone: true, store, nats: nats.url, id: SERVER_ID });
  const client = new StrataClient(nc, { server: SERVER_ID });
  const writer = new StrataClient(writerNc, { server: SERVER_ID });
  let changesRequests = 0;
  nc.subscribe(`strata.r.${SERVER_ID}.>`, {
    callback: (_err, msg) => {
      try {
        if (decodeMap(msg.data, "a request").op === "changes") changesRequests += 1;
      } catch {
        // not a request map
      }
    },
  });
  try {
    const kv = client.kv(LOCATION);
    const valueOf = (key: number, round: number) => {
      const v = new Uint8Array(params.valueBytes).fill(key % 251);
      new DataView(v.buffer).setUint32(0, round);
      return v;
    };
    progress(`writing ${params.keys} keys of ${params.valueBytes} bytes`);
    await runInFlight(64, params.keys, (i) => writer.kv(LOCATION).set(`k${i}`, valueOf(i, 0)));
    const runs = { uncached: [] as number[], cached: [] as number[], ratio: [] as number[], ready: [] as number[], perEntry: [] as number[], perWrite: [] as number[], catchUp: [] as number[] };
    for (let run = 0; run < options.runs; run++) {
      const random = prng(run + 1);
      const keyAt = () => `k${Math.floor(random() * params.keys)}`;
      const uncachedMs = await runInFlight(params.inFlight, params.reads, async () => {
        if ((await kv.get(keyAt())) === undefined) throw new Error("a key the benchmark wrote is missing");
      });
      const t0 = performance.now();
      const cache = kv.cache();
      await cache.ready;
      runs.ready.push(performance.now() - t0);
      const round = run; // the values of the last round written (0: the initial fill)
      const cachedMs = await runInFlight(params.inFlight, params.reads, async () => {
        const key = keyAt();
        const e = await cache.get(key);
        if (e === undefined || new DataView(e.value.buffer, e.value.byteOffset).getUint32(0) !== round) throw new Error(`the cache served a wrong value of ${key}`);
      });
      const uncached = perSecond(params.reads, uncachedMs);
      const cached = perSecond(params.reads, cachedMs);
      runs.uncached.push(uncached);
      runs.cached.push(cached);
      runs.ratio.push(cached / uncached);
      runs.perEntry.push(cache.bytes / params.keys);
      progress(`run ${run + 1}: uncached ${Math.round(uncached)} gets/s, cached ${Math.round(cached)} gets/s`);
      // Live writes of values the feed leaves out: what following them costs the cache.
      const before = changesRequests;
      const w0 = performance.now();
      let last = 0;
      await runInFlight(params.inFlight, params.liveWrites, async (i) => {
        const r = await writer.kv(LOCATION).set(`k${i % params.keys}`, valueOf(i % params.keys, run + 1));
        last = Math.max(last, r.revision);
      });
      await cache.waitFor(last);
      runs.catchUp.push(performance.now() - w0);
      runs.perWrite.push(Math.max(changesRequests - before, 0) / params.liveWrites);
      cache.close();
      // Later runs read the values of this round: rewrite the keys the live phase did not reach.
      await runInFlight(64, params.keys, (i) => (i < params.liveWrites ? Promise.resolve() : writer.kv(LOCATION).set(`k${i}`, valueOf(i, run + 1))));
    }
    const figures = {
      uncachedGetsPerSec: figure(runs.uncached, "gets/s"),
      cachedGetsPerSec: figure(runs.cached, "gets/s"),
      cachedToUncachedRatio: figure(runs.ratio, "ratio"),
      readyMs: figure(runs.ready, "ms"),
      cacheBytesPerEntry: figure(runs.perEntry, "bytes"),
      changesRequestsPerLiveWrite: figure(runs.perWrite, "requests/write"),
      liveCatchUpMs: figure(runs.catchUp, "ms"),
    };
    const targets = TARGETS.map((t) => judge(t, figures.cachedToUncachedRatio.median));
    return {
      ...benchHeader("cache", options, startedAt, started),
      params,
      figures,
      ...targetsTail(targets, options.scale),
    };
  } finally {
    client.close();
    writer.close();
    await server.stop();
    await store.close();
    await nc.close();
    await writerNc.close();
    await nats.stop();
    removeDir(dir);
  }
}

if (isMainModule(import.meta.url)) await runAsScript("cache", runCacheBench);

/**
 * The HTTP gateway benchmark (`strata bench --suite http`, or `tsx bench/http.ts [--tiny]`): kv
 * PUT and GET throughput (with `inFlight` requests outstanding) and latency (one at a time)
 * through the gateway (Node fetch → `strata http` → NATS → server), against the same operations
 * made by a StrataClient directly, in the same run on the same deployment, reported as ratios
 * (gateway / direct: throughput below 1 and latency above 1 are the gateway's cost).
 *
 * One process hosts the nats-server child's client, the standalone Strata server, the gateway and
 * the load generator, so the figures compare paths on one machine rather than measure capacity.
 * The floor of any HTTP face on Node is measured beside them: `httpEcho` is a bare node:http server
 * answering the same requests from the same fetch client (no routing, no NATS); the gateway's
 * targets are judged against it, as the net bench judges NATS paths against its echo.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Store } from "../src/store.js";
import { startGateway } from "../src/http/gateway.js";
import { TokenTable } from "../src/http/auth.js";
import { StrataClient } from "../src/net/client/client.js";
import { startServer } from "../src/net/server/server.js";
import { startNatsServer } from "../src/testing/nats-server.js";
import { connect } from "nats";
import path from "node:path";
import { checkSuiteOptions, isMainModule, runAsScript, type Scale } from "./lib/args.js";
import { makeTempDir, removeDir } from "./lib/fs.js";
import { runInFlight } from "./lib/load.js";
import { benchHeader, judge, targetsTail, type MachineInfo, type TargetResult, type TargetSpec } from "./lib/report.js";
import { figure, latencyHistogram, medianLatency, perSecond, summarize, type Figure, type LatencySummary } from "./lib/stats.js";

export interface HttpBenchOptions {
  scale: Scale;
  runs: number;
  dir?: string;
  progress?: (line: string) => void;
}

interface Params {
  ops: number;
  inFlight: number;
  latencyOps: number;
  keys: number;
  valueBytes: number;
}

const PARAMS: Record<Scale, Params> = {
  tiny: { ops: 200, inFlight: 8, latencyOps: 40, keys: 50, valueBytes: 256 },
  full: { ops: 20_000, inFlight: 64, latencyOps: 2_000, keys: 1_000, valueBytes: 256 },
};

type Op = "put" | "get";
type Path = "direct" | "gateway" | "httpEcho";
const PATHS: readonly Path[] = ["direct", "gateway", "httpEcho"];

interface PathFigures {
  opsPerSec: Figure;
  latency: LatencySummary;
}

export interface HttpBenchResult {
  suite: "http";
  scale: Scale;
  runs: number;
  startedAt: string;
  elapsedSeconds: number;
  machine: MachineInfo;
  params: Params;
  figures: Record<Op, Record<Path, PathFigures> & { throughputRatio: Figure; latencyP50Ratio: Figure; throughputVsHttpEcho: Figure }>;
  targets: TargetResult[];
  targetsMet: boolean;
  targetsApply: boolean;
}

const TARGETS: TargetSpec[] = [
  { name: "gatewayPutVsHttpEcho", figure: "figures.put.throughputVsHttpEcho", op: ">=", threshold: 0.5, unit: "ratio" },
  { name: "gatewayGetVsHttpEcho", figure: "figures.get.throughputVsHttpEcho", op: ">=", threshold: 0.5, unit: "ratio" },
];

const TOKEN = "bench-token-0123456789abcdef";

interface RunFigures {
  opsPerSec: Record<Op, Record<Path, number>>;
  latency: Record<Op, Record<Path, LatencySummary>>;
}

export async function runHttpBench(opts: HttpBenchOptions): Promise<HttpBenchResult> {
  checkSuiteOptions(opts);
  const p = PARAMS[opts.scale];
  const progress = opts.progress ?? (() => undefined);
  const startedAt = new Date();
  const started = performance.now();
  const runs: RunFigures[] = [];
  for (let run = 1; run <= opts.runs; run++) {
    progress(`run ${run} of ${opts.runs}`);
    const root = makeTempDir("strata-bench-http", opts.dir);
    try {
      runs.push(await oneRun(root, p, progress));
    } finally {
      removeDir(root);
    }
  }
  const figures = {} as HttpBenchResult["figures"];
  for (const op of ["put", "get"] as const) {
    const per = (path: Path): PathFigures => ({ opsPerSec: figure(runs.map((r) => r.opsPerSec[op][path]), "ops/s"), latency: medianLatency(runs.map((r) => r.latency[op][path])) });
    figures[op] = {
      direct: per("direct"),
      gateway: per("gateway"),
      httpEcho: per("httpEcho"),
      throughputVsHttpEcho: figure(runs.map((r) => r.opsPerSec[op].gateway / r.opsPerSec[op].httpEcho), "ratio"),
      throughputRatio: figure(runs.map((r) => r.opsPerSec[op].gateway / r.opsPerSec[op].direct), "ratio"),
      latencyP50Ratio: figure(runs.map((r) => r.latency[op].gateway.p50 / r.latency[op].direct.p50), "ratio"),
    };
  }
  const targets = TARGETS.map((t) => judge(t, t.figure === "figures.put.throughputVsHttpEcho" ? figures.put.throughputVsHttpEcho.median : figures.get.throughputVsHttpEcho.median));
  return {
    ...benchHeader("http", opts, startedAt, started),
    params: p,
    figures,
    ...targetsTail(targets, opts.scale),
  };
}

async function oneRun(root: string, p: Params, progress: (line: string) => void): Promise<RunFigures> {
  const nats = await startNatsServer();
  const nc = await connect({ servers: nats.url });
  const store = await Store.open({ dir: path.join(root, "store"), id: "s1" });
  const server = await startServer({ standalone: true, store, id: "s1", nats: nats.url });
  const client = new StrataClient(nc, { server: "s1" });
  const tokens = TokenTable.from({ tokens: [{ name: "bench", token: TOKEN, grants: [{ prefix: "", rights: "readwrite" }] }] });
  const gateway = await startGateway({ client, port: 0, tokens });
  const echoReply = new Uint8Array(p.valueBytes).fill(120);
  const echo = http.createServer((req, res) => {
    req.resume();
    req.on("end", () => res.end(req.method === "GET" ? echoReply : '{"revision":1}'));
  });
  await new Promise<void>((resolve) => echo.listen(0, "127.0.0.1", resolve));
  const echoUrl = (i: number) => `http://127.0.0.1:${(echo.address() as AddressInfo).port}/kv/bench%2Fhttp%2Fkv/k${i % p.keys}`;
  try {
    const value = new Uint8Array(p.valueBytes).fill(120);
    const kv = client.kv("bench/http/kv");
    const url = (i: number) => `${gateway.url}/kv/bench%2Fhttp%2Fkv/k${i % p.keys}`;
    const headers = { authorization: `Bearer ${TOKEN}` };
    const ops: Record<Op, Record<Path, (i: number) => Promise<unknown>>> = {
      put: {
        direct: (i) => kv.set(`k${i % p.keys}`, value),
        gateway: async (i) => expectOk(await fetch(url(i), { method: "PUT", body: value, headers })),
        httpEcho: async (i) => expectOk(await fetch(echoUrl(i), { method: "PUT", body: value, headers })),
      },
      get: {
        direct: async (i) => {
          if ((await kv.get(`k${i % p.keys}`)) === undefined) throw new Error("bench: a key written before is missing");
        },
        gateway: async (i) => expectOk(await fetch(url(i), { headers })),
        httpEcho: async (i) => expectOk(await fetch(echoUrl(i), { headers })),
      },
    };
    const out: RunFigures = { opsPerSec: { put: { direct: 0, gateway: 0, httpEcho: 0 }, get: { direct: 0, gateway: 0, httpEcho: 0 } }, latency: {} as RunFigures["latency"] };
    for (const op of ["put", "get"] as const) {
      out.latency[op] = {} as Record<Path, LatencySummary>;
      for (const path of PATHS) {
        await runInFlight(p.inFlight, Math.min(p.ops, p.keys * 2), ops[op][path]); // warm up (and write every key before the gets)
        out.opsPerSec[op][path] = perSecond(p.ops, await runInFlight(p.inFlight, p.ops, ops[op][path]));
        const h = latencyHistogram();
        await runInFlight(1, p.latencyOps, ops[op][path], h);
        out.latency[op][path] = summarize(h);
        progress(`${op} ${path}: ${Math.round(out.opsPerSec[op][path])} ops/s, p50 ${out.latency[op][path].p50} us`);
      }
    }
    return out;
  } finally {
    await new Promise((resolve) => echo.close(resolve));
    await gateway.close();
    client.close();
    await server.stop();
    await store.close();
    await nc.close();
    await nats.stop();
  }
}

async function expectOk(r: Response): Promise<void> {
  await r.arrayBuffer(); // read the body, so the connection returns to the pool
  if (r.status !== 200) throw new Error(`bench: the gateway answered ${r.status}`);
}

if (isMainModule(import.meta.url)) await runAsScript("http", runHttpBench);

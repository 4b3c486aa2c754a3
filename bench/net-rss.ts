/**
 * The idle RSS row of the net benchmark: the resident memory of nats-server, a strata server and a
 * coordinator, each idle for `idleMs` (IDLE_MS at full scale) after it started, and again after a load (new locations
 * located through the coordinator, then appends at 256 in flight), read from /proc/<pid>/status
 * (VmRSS, and its two parts: RssAnon, the process's own memory; RssFile, pages of mapped files,
 * mostly the node binary's code, which every node process maps and the page cache shares).
 *
 * The strata processes run as a user runs them: `node …/src/cli/main.js server|coordinator` from
 * plain JavaScript. The bench itself runs from TypeScript through tsx, whose loader (a thread with
 * its own V8 isolate, and esbuild) would add ~35 MB to each process; so this module transpiles
 * src/ once into the scratch directory (with the esbuild that tsx itself uses: no type check, about
 * a second) and runs that, with node_modules linked. Only the processes started here are
 * signalled, by PID.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { connect } from "nats";
import { StrataClient } from "../src/net/client/client.js";
import { judge, type TargetResult } from "./lib/report.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
/** How long each process is left alone before its RSS is read ("idle"). */
export const IDLE_MS = 2000;
const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;

export interface RssKb {
  vmRssKb: number;
  rssAnonKb: number;
  rssFileKb: number;
}

export interface IdleRssFigures {
  unit: "kB";
  how: string;
  afterStart: Record<"natsServer" | "strataServer" | "coordinator", RssKb>;
  afterLoad: Record<"natsServer" | "strataServer" | "coordinator", RssKb>;
  load: { locations: number; messagesPerLocation: number; oneStreamMessages: number; idleMs: number; valueBytes: number };
}

export interface IdleRssParams {
  locations: number;
  messagesPerLocation: number;
  oneStreamMessages: number;
  /** Idle time before each reading (IDLE_MS at full scale; shorter for the test suite's tiny run). */
  idleMs: number;
}

export const IDLE_RSS_PARAMS: Record<"tiny" | "full", IdleRssParams> = {
  tiny: { locations: 10, messagesPerLocation: 2, oneStreamMessages: 200, idleMs: 300 },
  full: { locations: 1000, messagesPerLocation: 10, oneStreamMessages: 50_000, idleMs: IDLE_MS },
};

const VALUE_BYTES = 1024;
const IN_FLIGHT = 256;

/** VmRSS, RssAnon and RssFile of a process, in kB (Linux); undefined where /proc cannot tell. */
export function readRss(pid: number): RssKb | undefined {
  let status: string;
  try {
    status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    return undefined;
  }
  const field = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? Number.NaN);
  const out = { vmRssKb: field("VmRSS"), rssAnonKb: field("RssAnon"), rssFileKb: field("RssFile") };
  return Object.values(out).every(Number.isFinite) ? out : undefined;
}

interface Esbuild {
  transformSync(code: string, options: { loader: "ts"; format: "esm"; target: string; sourcefile: string }): { code: string };
}

/** Transpiles src/**\/*.ts into `dir`/src (ESM, ES2022), so that node runs the CLI without a loader. */
export function transpileSources(dir: string): string {
  // tsx's own esbuild (resolved from tsx's location, as tsx resolves it): no extra dependency.
  const esbuild = createRequire(path.join(ROOT, "node_modules", "tsx", "package.json"))("esbuild") as Esbuild;
  const srcRoot = path.join(ROOT, "src");
  for (const rel of fs.readdirSync(srcRoot, { recursive: true, encoding: "utf8" })) {
    if (!rel.endsWith(".ts") || rel.endsWith(".d.ts")) continue;
    const text = fs.readFileSync(path.join(srcRoot, rel), "utf8");
    const out = esbuild.transformSync(text, { loader: "ts", format: "esm", target: "es2022", sourcefile: rel });
    const target = path.join(dir, "src", rel.replace(/\.ts$/, ".js"));
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.writeFileSync(target, out.code);
  }
  fs.writeFileSync(path.join(dir, "package.json"), JSON.stringify({ type: "module" }));
  fs.symlinkSync(path.join(ROOT, "node_modules"), path.join(dir, "node_modules"), "dir");
  return path.join(dir, "src", "cli", "main.js");
}

export interface CliProcess {
  pid: number;
  /** SIGTERM, SIGKILL after 10 s; resolves once it exited. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL; resolves once it exited. */
  kill9(): Promise<void>;
}

/** Starts `node main.js ...args` (a transpiled CLI) and resolves once its stdout says "ready". */
export async function startCli(main: string, args: string[]): Promise<CliProcess> {
  const child: ChildProcess = spawn(process.execPath, [main, ...args], { stdio: ["ignore", "pipe", "inherit"] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const pid = child.pid!;
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      process.kill(pid, "SIGTERM");
      const timer = setTimeout(() => child.exitCode === null && child.signalCode === null && process.kill(pid, "SIGKILL"), STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    })());
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`strata ${args[0]} was not ready within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS);
      let seen = "";
      child.stdout!.on("data", (chunk: Buffer) => {
        seen = (seen + chunk.toString("utf8")).slice(-4096);
        if (/ ready /.test(seen)) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once("error", reject);
      void exited.then(() => reject(new Error(`strata ${args[0]} exited (${child.exitCode ?? child.signalCode}) before it was ready`)));
    });
  } catch (err) {
    await stop();
    throw err;
  }
  // Keep draining its stdout (log lines) so that it never blocks on a full pipe.
  child.stdout!.resume();
  const kill9 = async () => {
    if (child.exitCode === null && child.signalCode === null) process.kill(pid, "SIGKILL");
    await exited;
  };
  return { pid, stop, kill9 };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Runs `count` tasks with at most `limit` in flight. */
async function inFlight(count: number, limit: number, task: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
}

/**
 * Measures the row: a coordinator and a strata server registered with it (as `strata up` runs
 * them), each transpiled CLI in its own process, on the bench's nats-server.
 */
export async function measureIdleRss(options: { natsUrl: string; natsPid: number; dir: string; params: IdleRssParams; progress: (line: string) => void }): Promise<IdleRssFigures> {
  const { natsUrl, natsPid, dir, params, progress } = options;
  progress("idle RSS: transpiling src/ to run the CLI without a loader");
  const main = transpileSources(path.join(dir, "build"));
  const coordinator = await startCli(main, ["coordinator", "--data", path.join(dir, "coordinator"), "--nats", natsUrl]);
  let server: CliProcess | undefined;
  try {
    server = await startCli(main, ["server", "--id", "rss", "--data", path.join(dir, "server"), "--nats", natsUrl]);
    const read = (): Record<"natsServer" | "strataServer" | "coordinator", RssKb> => {
      const get = (pid: number) => readRss(pid) ?? { vmRssKb: Number.NaN, rssAnonKb: Number.NaN, rssFileKb: Number.NaN };
      return { natsServer: get(natsPid), strataServer: get(server!.pid), coordinator: get(coordinator.pid) };
    };
    await sleep(params.idleMs);
    const afterStart = read();
    progress(`idle RSS after start: server ${afterStart.strataServer.vmRssKb} kB, coordinator ${afterStart.coordinator.vmRssKb} kB`);
    const nc = await connect({ servers: natsUrl, name: "strata-bench-rss" });
    const client = new StrataClient(nc);
    try {
      const value = new Uint8Array(VALUE_BYTES).fill(7);
      // The server registers with the coordinator after it printed ready: wait (bounded) until a
      // first location can be written, which is what the load needs anyway.
      const until = performance.now() + READY_TIMEOUT_MS;
      for (;;) {
        try {
          await client.stream("rss/first").append({ value });
          break;
        } catch (err) {
          if (performance.now() > until) throw err;
          await sleep(50);
        }
      }
      await inFlight(params.locations * params.messagesPerLocation, IN_FLIGHT, (i) => client.stream(`rss/loc-${i % params.locations}`).append({ value }));
      const one = client.stream("rss/one");
      await inFlight(params.oneStreamMessages, IN_FLIGHT, () => one.append({ value }));
    } finally {
      client.close();
      await nc.close();
    }
    await sleep(params.idleMs);
    const afterLoad = read();
    progress(`idle RSS after load: server ${afterLoad.strataServer.vmRssKb} kB, coordinator ${afterLoad.coordinator.vmRssKb} kB`);
    return {
      unit: "kB",
      how: `VmRSS (= RssAnon + RssFile + RssShmem) from /proc/<pid>/status, ${params.idleMs} ms after the process was ready, and ${params.idleMs} ms after the load ended; strata processes run the CLI transpiled to JavaScript (no tsx loader), a server registered with a coordinator`,
      afterStart,
      afterLoad,
      load: { ...params, valueBytes: VALUE_BYTES },
    };
  } finally {
    await server?.stop();
    await coordinator.stop();
  }
}

/** Idle RSS goals (issue #11): the worse of after start and after load, VmRSS in MiB. */
export function idleRssTargets(f: IdleRssFigures): TargetResult[] {
  const mib = (role: "strataServer" | "coordinator") => Number((Math.max(f.afterStart[role].vmRssKb, f.afterLoad[role].vmRssKb) / 1024).toFixed(1));
  return [
    judge({ name: "idleRssStrataServer", figure: "idleRss.{afterStart,afterLoad}.strataServer.vmRssKb (max)", op: "<=", threshold: 50, unit: "MiB" }, mib("strataServer")),
    judge({ name: "idleRssCoordinator", figure: "idleRss.{afterStart,afterLoad}.coordinator.vmRssKb (max)", op: "<=", threshold: 40, unit: "MiB" }, mib("coordinator")),
  ];
}

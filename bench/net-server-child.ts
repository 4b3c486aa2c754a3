/**
 * The responders of the net benchmark, each in a process of its own, so that their CPU is not
 * taken from the benchmark's client (JetStream, inside nats-server, has its own process too):
 * a strata server (`role: "strata"`; pinned by its clients, or with `coordinated` registered with
 * a coordinator), a coordinator (`role: "coordinator"`, as `strata coordinator` runs it), or a
 * trivial echo responder on core NATS (`role: "echo"`, which answers every request on `subject`
 * with its own payload: the request/reply ceiling), or the lag probe (`role: "lagProbe"`,
 * ./lib/lag-probe.ts: an otherwise idle process whose timers show the machine's own stalls).
 *
 * `startBenchServer` spawns `node [--import tsx] bench/net-server-child.ts` with its settings in the
 * STRATA_BENCH_SERVER environment variable (JSON); the child answers { type: "ready" } over IPC
 * once it serves, and on SIGTERM stops gracefully (exit 0).
 * Only the child started here is ever signalled, by its PID; if it has not exited 10 s after
 * SIGTERM it gets SIGKILL.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { isMainModule } from "./lib/args.js";
import type { ProbeLag } from "./lib/lag-probe.js";

const ROOT = fileURLToPath(new URL("..", import.meta.url));
const SCRIPT = fileURLToPath(import.meta.url);
const READY_TIMEOUT_MS = 30_000;
const STOP_TIMEOUT_MS = 10_000;

export type BenchServerSettings = StrataSettings | EchoSettings | CoordinatorSettings | LagProbeSettings;

export interface StrataSettings {
  role: "strata";
  url: string;
  dir: string;
  id: string;
  fsync: "always" | "interval";
  /** Registers with the coordinator (default prefix) instead of serving standalone; ready once it holds a lease. */
  coordinated?: boolean;
  /** Directory for a V8 CPU profile of the child (`node --cpu-prof`), for finding its hot spots. */
  cpuProfDir?: string;
  /** Records metrics and serves them on this loopback port, as `strata server --metrics-port` does (bench/net-metrics.ts). */
  metricsPort?: number;
}

export interface EchoSettings {
  role: "echo";
  url: string;
  /** Subject (wildcards allowed) the echo responder answers on. */
  subject: string;
  cpuProfDir?: string;
}

export interface CoordinatorSettings {
  role: "coordinator";
  url: string;
  /** The coordinator's state directory (fresh per run). */
  dir: string;
  cpuProfDir?: string;
}

export interface LagProbeSettings {
  role: "lagProbe";
  /** How often the probe's timer is due while a window is open. */
  tickMs: number;
  cpuProfDir?: string;
}

/** The lag probe's answer to { type: "end" }: how late its timers fired since { type: "begin" }. */
export type LagProbeWindow = ProbeLag & { type: "lag" };

export interface BenchServer {
  readonly pid: number;
  /** Sends `msg` to the child over IPC and resolves with its next message of type `replyType`. */
  ask<T>(msg: { type: string }, replyType: string): Promise<T>;
  /** SIGTERM, wait for the graceful exit; SIGKILL after 10 s. Idempotent. */
  stop(): Promise<void>;
}

export async function startBenchServer(settings: BenchServerSettings): Promise<BenchServer> {
  // Run from source through tsx (bench, tests); a compiled .js needs no loader.
  const execArgv = SCRIPT.endsWith(".ts") ? ["--import", "tsx"] : [];
  if (settings.cpuProfDir !== undefined) execArgv.push("--cpu-prof", `--cpu-prof-dir=${settings.cpuProfDir}`);
  const child: ChildProcess = spawn(process.execPath, [...execArgv, SCRIPT], {
    cwd: ROOT,
    env: { ...process.env, STRATA_BENCH_SERVER: JSON.stringify(settings) },
    stdio: ["ignore", "ignore", "inherit", "ipc"],
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const pid = child.pid;
  const stop = once(async () => {
    if (pid !== undefined && child.exitCode === null && child.signalCode === null) {
      process.kill(pid, "SIGTERM");
      const timer = setTimeout(() => {
        if (child.exitCode === null && child.signalCode === null) process.kill(pid, "SIGKILL");
      }, STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(timer);
    }
  });
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the strata server child was not ready within ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS);
      child.on("message", (msg: { type?: string }) => {
        if (msg?.type !== "ready") return;
        clearTimeout(timer);
        resolve();
      });
      child.once("error", reject);
      void exited.then(() => reject(new Error(`the strata server child exited (${child.exitCode ?? child.signalCode}) before it was ready`)));
    });
  } catch (err) {
    await stop();
    throw err;
  }
  const ask = <T>(msg: { type: string }, replyType: string) =>
    new Promise<T>((resolve, reject) => {
      const onMessage = (reply: { type?: string }) => {
        if (reply?.type !== replyType) return;
        child.off("message", onMessage);
        resolve(reply as T);
      };
      child.on("message", onMessage);
      child.send(msg, (err) => {
        if (err === null) return;
        child.off("message", onMessage);
        reject(err);
      });
    });
  return { pid: pid!, ask, stop };
}

function once(fn: () => Promise<void>): () => Promise<void> {
  let running: Promise<void> | undefined;
  return () => (running ??= fn());
}

async function childMain(): Promise<void> {
  const settings = JSON.parse(process.env.STRATA_BENCH_SERVER ?? "{}") as BenchServerSettings;
  const stop =
    settings.role === "echo"
      ? await serveEcho(settings)
      : settings.role === "coordinator"
        ? await serveCoordinator(settings)
        : settings.role === "lagProbe"
          ? serveLagProbe(settings)
          : await serveStrata(settings);
  // A benchmark that dies without stopping us (killed, crashed) must not leave us behind.
  process.once("disconnect", () => process.exit(1));
  process.once("SIGTERM", () => {
    process.removeAllListeners("disconnect");
    stop().then(
      // process.exit() would skip writing the --cpu-prof profile; let the event loop empty instead.
      () => process.disconnect?.(),
      (err: unknown) => {
        process.stderr.write(`bench ${settings.role} child: stop failed: ${String(err)}\n`);
        process.exit(1);
      },
    );
  });
  process.send?.({ type: "ready" });
}

async function serveStrata(settings: StrataSettings): Promise<() => Promise<void>> {
  const { startServer } = await import("../src/net/server/server.js");
  const { Metrics } = await import("../src/metrics/metrics.js");
  const { startMetricsEndpoint } = await import("../src/metrics/http-endpoint.js");
  const { warningLineLogger } = await import("../src/logger.js");
  const metrics = settings.metricsPort !== undefined ? new Metrics({ processMetrics: true }) : undefined;
  const endpoint = metrics ? await startMetricsEndpoint({ metrics, port: settings.metricsPort!, ready: () => ({}) }) : undefined;
  const server = await startServer({
    ...(metrics ? { metrics } : {}),
    // Pinned by the client, no coordinator (bench/net.ts), unless coordinated.
    standalone: settings.coordinated !== true,
    id: settings.id,
    dir: settings.dir,
    nats: settings.url,
    storeOptions: { fsync: settings.fsync, sweepTimers: false },
    logger: warningLineLogger((line) => process.stderr.write(`bench strata server: ${line}\n`)),
  });
  if (settings.coordinated === true) {
    // Ready only once registered and holding a lease, so the first locate finds a live server.
    // The server exposes no event for it: poll its stats, bounded by the parent's ready timeout.
    while (server.stats().ownership?.incarnation === undefined || (server.stats().ownership?.leaseRemainingMs ?? 0) <= 0) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }
  return async () => {
    await server.stop();
    await endpoint?.close();
  };
}

async function serveCoordinator(settings: CoordinatorSettings): Promise<() => Promise<void>> {
  const { connect } = await import("nats");
  const { startCoordinator } = await import("../src/net/coord/coordinator.js");
  const { warningLineLogger } = await import("../src/logger.js");
  const nc = await connect({ servers: settings.url, name: "strata-bench-coordinator" });
  const coordinator = await startCoordinator({ nc, dataDir: settings.dir, logger: warningLineLogger((line) => process.stderr.write(`bench coordinator: ${line}\n`)) });
  return async () => {
    await coordinator.stop();
    await nc.drain();
  };
}

async function serveEcho(settings: EchoSettings): Promise<() => Promise<void>> {
  const { connect } = await import("nats");
  const nc = await connect({ servers: settings.url, name: "strata-bench-echo" });
  nc.subscribe(settings.subject, {
    callback: (_err, msg) => {
      if (msg.reply) nc.publish(msg.reply, msg.data);
    },
  });
  await nc.flush();
  return () => nc.drain();
}

/**
 * The lag probe: while a window is open ({ type: "begin" } to { type: "end" }), a timer is due
 * every `tickMs`, scheduled as the paced loads schedule their sends (due times fixed up front, so
 * a stall makes every tick due during it late); the answer says how late they fired. The process
 * does nothing else, so its lateness is the machine's: the host taking the vCPU, or the other
 * processes of the run keeping both cores busy.
 */
function serveLagProbe(settings: LagProbeSettings): () => Promise<void> {
  let lags: number[] = [];
  let timer: NodeJS.Timeout | undefined;
  const tick = (due: number) => {
    lags.push(Math.max(0, performance.now() - due));
    const next = due + settings.tickMs;
    timer = setTimeout(() => tick(next), Math.max(0, next - performance.now()));
  };
  process.on("message", (msg: { type?: string }) => {
    if (msg?.type === "begin") {
      clearTimeout(timer);
      lags = [];
      const due = performance.now() + settings.tickMs;
      timer = setTimeout(() => tick(due), settings.tickMs);
      process.send?.({ type: "begun" });
    } else if (msg?.type === "end") {
      clearTimeout(timer);
      timer = undefined;
      const sorted = lags.sort((a, b) => a - b);
      const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
      const window: LagProbeWindow = { type: "lag", ticks: sorted.length, p99Ms: at(0.99), p999Ms: at(0.999), maxMs: sorted[sorted.length - 1] ?? 0 };
      process.send?.(window);
    }
  });
  return async () => clearTimeout(timer);
}

if (isMainModule(import.meta.url)) await childMain();

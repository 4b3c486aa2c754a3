/**
 * `strata up [--data ./strata-data] [--port 4222] [--metrics-port N]`: the whole stack on one machine, for trying
 * Strata and for development. It starts a real nats-server (the one child process), then in this
 * process a coordinator and one persistence server, prints how to connect, and on Ctrl-C or
 * SIGTERM stops them in reverse order: server, coordinator, and last nats-server (by its PID),
 * so the server and coordinator can drain over a live connection.
 *
 * Layout under --data: `nats/` (config, pid, log), `coordinator/`, `server/`, and `tier/` (the
 * object-store directory the server will ship sealed segments to).
 *
 * With `--metrics-port`, one endpoint serves the coordinator's and the server's metrics (one
 * registry: their names do not overlap) and a /readyz that holds both processes' checks, the
 * coordinator's prefixed `coordinator_` (src/metrics/readiness.ts).
 *
 * nats-server runs in its own process group so that Ctrl-C in the terminal reaches only this
 * process, which then stops everything in order; should this process die without that, an
 * `exit` hook still kills the child. nats-server listens on 127.0.0.1 only and without users:
 * this is a single-machine setup. For users and permissions see deploy/.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import type { Command } from "commander";
import { connect, type NatsConnection } from "nats";
import { startCoordinator, type Coordinator } from "../net/coord/coordinator.js";
import { DEFAULT_PREFIX } from "../net/wire/coordinator-protocol.js";
import { startServer } from "../net/server/server.js";
import { silentLogger, type Logger } from "../logger.js";
import type { Metrics } from "../metrics/metrics.js";
import { watchNats } from "../metrics/nats-watch.js";
import { coordinatorReadiness, serverReadiness, type CoordinatorLive, type ServerLive } from "../metrics/readiness.js";
import { cliLogger, type LogFlags } from "./config-sources.js";
import { exitOnSignal } from "./coordinator.js";
import { addMetricsFlags, startMetricsFromFlags, type MetricsFlags } from "./metrics-flags.js";

const NATS_READY_TIMEOUT_MS = 15_000;
const NATS_STOP_TIMEOUT_MS = 10_000;
/** Where Debian and the upstream tarballs put nats-server, also when they are not on PATH. */
const NATS_SERVER_FALLBACK_DIRS = ["/usr/sbin", "/usr/local/sbin", "/usr/local/bin", "/usr/bin"];
const SERVER_ID = "local-1";
const LOG_TAIL_CHARS = 2000;

interface UpFlags extends LogFlags, MetricsFlags {
  data: string;
  port: string;
}

/** This process's logger (stdout, --log-level/--log-format); set when the command starts. */
let logger: Logger = silentLogger;

interface Layout {
  root: string;
  nats: string;
  coordinator: string;
  server: string;
  tier: string;
}

interface Stoppable {
  stop(): Promise<void>;
}

export function register(program: Command): void {
  const command = program
    .command("up")
    .description("run nats-server, a coordinator and one persistence server on this machine")
    .option("--data <dir>", "data directory", "./strata-data")
    .option("--port <port>", "port for nats-server on 127.0.0.1", "4222");
  addMetricsFlags(command).action(async (flags: UpFlags) => {
    await up(flags);
  });
}

async function up(flags: UpFlags): Promise<void> {
  logger = cliLogger(flags, { component: "up" });
  const port = Number(flags.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    fail(`--port must be a TCP port (1..65535), got ${JSON.stringify(flags.port)}`);
  }
  const natsServer = findNatsServer();
  if (natsServer === undefined) {
    fail("nats-server was not found on PATH (nor in /usr/sbin, /usr/local/sbin, /usr/local/bin).\n" + "Install it with:\n\n    sudo apt-get install -y nats-server\n");
  }
  const dirs = makeLayout(flags.data);
  const url = `nats://127.0.0.1:${port}`;
  // Before nats-server: a metrics port in use is refused before anything is started.
  const coordLive: CoordinatorLive = {};
  const serverLive: ServerLive = {};
  const { metrics, endpoint } = await startMetricsFromFlags(flags, () => ({ ...prefixed("coordinator_", coordinatorReadiness(coordLive)()), ...serverReadiness(serverLive, true)() }));
  if (endpoint) logger.info({ event: "metrics_listening", url: endpoint.url, port: endpoint.port }, `metrics on ${endpoint.url}/metrics (/healthz, /readyz), port ${endpoint.port}`);

  const nats = await startNats(natsServer, dirs, port);
  const stack: Array<{ what: string; part: Stoppable }> = [];
  const connections: NatsConnection[] = [];
  let stopping: Promise<void> | undefined;
  const shutdown = (): Promise<void> =>
    (stopping ??= (async () => {
      // Reverse order of start; each part is stopped even if an earlier one failed.
      for (const { what, part } of stack.reverse()) await part.stop().catch((err: unknown) => logger.error({ event: "stop_failed", part: what, error: String(err) }, `stopping the ${what} failed: ${String(err)}`));
      for (const nc of connections) await nc.drain().catch(() => nc.close());
      coordLive.nats?.stop();
      serverLive.nats?.stop();
      await nats.stop();
      await endpoint?.close();
    })());
  exitOnSignal("strata up", shutdown, logger);

  try {
    const coordNc = await connect({ servers: url, name: "strata-up-coordinator", maxReconnectAttempts: -1 });
    connections.push(coordNc);
    coordLive.nats = watchNats(coordNc);
    const coordinator: Coordinator = await startCoordinator({
      nc: coordNc,
      dataDir: dirs.coordinator,
      prefix: DEFAULT_PREFIX,
      logger: logger.child({ component: "coordinator" }),
      ...(metrics ? { metrics } : {}),
    });
    coordLive.coordinator = coordinator;
    stack.push({ what: "coordinator", part: coordinator });

    const serverNc = await connect({ servers: url, name: `strata-up-server-${SERVER_ID}`, maxReconnectAttempts: -1 });
    connections.push(serverNc);
    serverLive.nats = watchNats(serverNc);
    const server = await startPersistenceServer(serverNc, dirs, metrics);
    serverLive.server = server;
    stack.push({ what: "server", part: server });
  } catch (err) {
    logger.error({ event: "startup_failed", error: (err as Error)?.message ?? String(err) }, `start-up failed: ${(err as Error)?.message ?? String(err)}`);
    await shutdown();
    process.exit(1);
  }

  void nats.exited.then((code) => {
    if (stopping) return;
    logger.error({ event: "nats_server_exited", code, log: path.join(dirs.nats, "nats-server.log") }, `nats-server exited unexpectedly (${code}); see ${path.join(dirs.nats, "nats-server.log")}`);
    void shutdown().finally(() => process.exit(1));
  });
  printHowToConnect(url, dirs);
}

/** The persistence server, on its own connection, with `tier/` as its object store. */
async function startPersistenceServer(nc: NatsConnection, dirs: Layout, metrics: Metrics | undefined): Promise<Stoppable & { leaseHeld(): boolean }> {
  const server = await startServer({
    id: SERVER_ID,
    prefix: DEFAULT_PREFIX,
    dir: dirs.server,
    storeOptions: { tier: `dir:${dirs.tier}` },
    nats: nc,
    logger: logger.child({ component: "server", server: SERVER_ID }),
    ...(metrics ? { metrics } : {}),
  });
  logger.info({ event: "server_ready", server: SERVER_ID, data: dirs.server, tier: dirs.tier }, `persistence server "${SERVER_ID}" ready, data in ${dirs.server}, tier ${dirs.tier}`);
  return server;
}

function printHowToConnect(url: string, dirs: Layout): void {
  const example =
    `node --input-type=module -e 'import { connect } from "nats"; import { StrataClient } from "strata"; ` +
    `const nc = await connect({ servers: "${url}" }); ` +
    `const r = await new StrataClient(nc).stream("acct/alice/chat").append({ value: new TextEncoder().encode("hi") }); ` +
    `console.log(r); await nc.close()'`;
  process.stdout.write(
    [
      "",
      `Strata is up. NATS: ${url}   data: ${dirs.root}`,
      `Try it:  ${example}`,
      "Stop with Ctrl-C.",
      "",
    ].join("\n"),
  );
}

function makeLayout(data: string): Layout {
  const root = path.resolve(data);
  const dirs: Layout = {
    root,
    nats: path.join(root, "nats"),
    coordinator: path.join(root, "coordinator"),
    server: path.join(root, "server"),
    tier: path.join(root, "tier"),
  };
  for (const dir of Object.values(dirs)) fs.mkdirSync(dir, { recursive: true });
  return dirs;
}

export function findNatsServer(envPath = process.env.PATH ?? ""): string | undefined {
  const dirs = [...envPath.split(path.delimiter).filter((d) => d.length > 0), ...NATS_SERVER_FALLBACK_DIRS];
  for (const dir of dirs) {
    const candidate = path.join(dir, "nats-server");
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      if (fs.statSync(candidate).isFile()) return candidate;
    } catch {
      // Not here; try the next directory.
    }
  }
  return undefined;
}

interface RunningNats {
  exited: Promise<number | string>;
  stop(): Promise<void>;
}

/** Starts nats-server and resolves once it logs "Server is ready"; its log goes to nats/. */
async function startNats(binary: string, dirs: Layout, port: number): Promise<RunningNats> {
  const conf = path.join(dirs.nats, "nats-server.conf");
  const logFile = path.join(dirs.nats, "nats-server.log");
  // Rewritten on every start so the port flag always wins; JSON strings are valid config strings.
  fs.writeFileSync(
    conf,
    `# Written by \`strata up\`; local use only (loopback, no users).\n` +
      `listen: ${JSON.stringify(`127.0.0.1:${port}`)}\n` +
      `pid_file: ${JSON.stringify(path.join(dirs.nats, "nats-server.pid"))}\n`,
  );
  const logStream = fs.createWriteStream(logFile, { flags: "a" });
  const child = spawn(binary, ["-c", conf], { stdio: ["ignore", "pipe", "pipe"], detached: true });
  const killOnExit = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  };
  process.on("exit", killOnExit);
  let tail = "";
  const onOutput = (chunk: Buffer): void => {
    logStream.write(chunk);
    tail = (tail + chunk.toString()).slice(-LOG_TAIL_CHARS);
  };
  child.stdout!.on("data", onOutput);
  child.stderr!.on("data", onOutput);
  const exited = new Promise<number | string>((resolve) => child.once("exit", (code, signal) => resolve(code ?? signal ?? "unknown")));

  const ready = await new Promise<boolean>((resolve) => {
    const timer = setTimeout(() => resolve(false), NATS_READY_TIMEOUT_MS);
    const check = (): void => {
      if (tail.includes("Server is ready")) {
        clearTimeout(timer);
        child.stderr!.off("data", check);
        resolve(true);
      }
    };
    child.stderr!.on("data", check);
    child.once("error", () => resolve(false));
    void exited.then(() => resolve(false));
  });
  if (!ready) {
    killOnExit();
    const inUse = /address already in use/i.test(tail) ? `\nPort ${port} is taken; pick another with --port.` : "";
    fail(`nats-server did not start (log: ${logFile}):\n${tail.trim()}${inUse}`);
  }
  logger.info({ event: "nats_server_ready", pid: child.pid, port }, `nats-server ${child.pid} ready on 127.0.0.1:${port}`);
  return {
    exited,
    async stop() {
      process.off("exit", killOnExit);
      if (child.exitCode !== null || child.signalCode !== null) return;
      // Exactly the child we started, by its PID (never by name).
      child.kill("SIGTERM");
      const forced = setTimeout(() => child.kill("SIGKILL"), NATS_STOP_TIMEOUT_MS);
      await exited;
      clearTimeout(forced);
      logStream.end();
    },
  };
}


function prefixed(prefix: string, checks: Record<string, boolean>): Record<string, boolean> {
  return Object.fromEntries(Object.entries(checks).map(([name, ok]) => [prefix + name, ok]));
}

function fail(message: string): never {
  process.stderr.write(`strata up: ${message}\n`);
  process.exit(1);
}

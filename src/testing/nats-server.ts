/**
 * Starts a real nats-server (Debian's `nats-server`, found on PATH or where `strata up` looks for
 * it, or $NATS_SERVER) for tests and benches. Every test and bench that needs NATS goes through
 * here (the failover harness, ./cluster.ts, routes three of them together). `strata up` keeps its
 * own start-up (fixed port, own process group, files under its data dir) but the same lookup.
 *
 *   const nats = await startNatsServer();                          // plain server
 *   const nats = await startNatsServer({ maxPayload: 64 * 1024 }); // small max_payload
 *   const nats = await startNatsServer({ config: "authorization { … }" });
 *   const nats = await startNatsServer({ jetstream: true });       // JetStream, files in the temp dir
 *   const nats = await startNatsServer({ configFile: "deploy/secure/nats-server.conf", env: { … } });
 *   nats.url; nats.port; nats.pid;
 *   await nats.restart();   // same port, same config (clients reconnect)
 *   await nats.stop();      // idempotent
 *
 * It listens on 127.0.0.1 on a free port. nats-server does not take port 0, and restart() needs
 * the same port again, so we find one by binding port 0 ourselves and closing it, and retry with
 * another if nats-server then fails to bind. Readiness is a successful TCP connect (polled) once the server
 * has logged that it is ready, never a fixed sleep.
 * Only the process started here is ever signalled, by its PID. Address and port are given on the
 * command line, which overrides any `listen`/`port`/`host` in the config text (so a shipped config
 * such as deploy/nats-server.conf can be passed as it is). `configFile` runs a config file where it
 * lies, unchanged (its `include`s and `$VAR`s resolve as in production), with `env` added to the
 * environment of nats-server.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findNatsServer } from "../cli/up.js";

export interface NatsServerOptions {
  /** Extra nats-server configuration text (authorization, limits, …). */
  config?: string;
  /** Sets `max_payload` (bytes). */
  maxPayload?: number;
  /** Enables JetStream with its store in this server's temp dir (removed by stop()); kept across restart(). */
  jetstream?: boolean;
  /** Runs this config file as it is instead of a generated one (not with config/maxPayload/jetstream). */
  configFile?: string;
  /** Added to nats-server's environment (a config's `$VAR`s read it). */
  env?: Record<string, string>;
}

export interface RunningNatsServer {
  /** `nats://127.0.0.1:PORT` */
  readonly url: string;
  readonly port: number;
  /** PID of the current nats-server process (changes on restart). */
  readonly pid: number;
  /** Stops the server (SIGTERM, then SIGKILL after 5 s) and removes its files. Idempotent. */
  stop(): Promise<void>;
  /** Stops the server and starts it again on the same port with the same config. */
  restart(): Promise<void>;
}

const BIN = process.env.NATS_SERVER ?? findNatsServer() ?? "nats-server";
const READY_TIMEOUT_MS = 10_000;
const PORT_ATTEMPTS = 5;

export async function startNatsServer(options: NatsServerOptions = {}): Promise<RunningNatsServer> {
  const dir = await mkdtemp(join(tmpdir(), "strata-nats-"));
  let confPath = join(dir, "nats-server.conf");
  if (options.configFile !== undefined) {
    if (options.config !== undefined || options.maxPayload !== undefined || options.jetstream) {
      await rm(dir, { recursive: true, force: true });
      throw new Error("startNatsServer: configFile runs a file as it is; config, maxPayload and jetstream go without it");
    }
    confPath = options.configFile;
  } else {
    const lines = [options.config ?? ""];
    if (options.maxPayload !== undefined) lines.push(`max_payload: ${options.maxPayload}`);
    if (options.jetstream) lines.push(`jetstream { store_dir: ${JSON.stringify(join(dir, "jetstream"))} }`);
    await writeFile(confPath, lines.join("\n") + "\n");
  }
  const env = options.env ? { ...process.env, ...options.env } : process.env;

  let child: ChildProcess | undefined;
  let port = 0;
  let lastError: unknown;
  for (let attempt = 0; attempt < PORT_ATTEMPTS && !child; attempt++) {
    port = await freePort();
    try {
      child = await launch(confPath, port, env);
    } catch (err) {
      lastError = err;
    }
  }
  if (!child) {
    await rm(dir, { recursive: true, force: true });
    throw new Error(`could not start nats-server: ${(lastError as Error)?.message}`);
  }
  let current: ChildProcess = child;
  let stopped: Promise<void> | undefined;
  const onExit = () => current.pid !== undefined && current.exitCode === null && process.kill(current.pid, "SIGKILL");
  process.once("exit", onExit);

  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    get pid() {
      return current.pid!;
    },
    async restart() {
      await terminate(current);
      // The port was ours a moment ago; another process may grab it in between, so retry a little.
      let err: unknown;
      for (let attempt = 0; attempt < PORT_ATTEMPTS; attempt++) {
        try {
          current = await launch(confPath, port, env);
          return;
        } catch (e) {
          err = e;
          await new Promise((resolve) => setTimeout(resolve, 100 * (attempt + 1)));
        }
      }
      throw err;
    },
    stop() {
      stopped ??= (async () => {
        process.removeListener("exit", onExit);
        await terminate(current);
        await rm(dir, { recursive: true, force: true });
      })();
      return stopped;
    },
  };
}

/** Starts nats-server on `port` and resolves once it accepts TCP connections. */
async function launch(confPath: string, port: number, env: NodeJS.ProcessEnv): Promise<ChildProcess> {
  const child = spawn(BIN, ["-c", confPath, "-a", "127.0.0.1", "-p", String(port)], { stdio: ["ignore", "ignore", "pipe"], env });
  let log = "";
  child.stderr!.on("data", (d: Buffer) => {
    if (log.length < 20_000) log += d.toString();
  });
  const exited = new Promise<never>((_, reject) => {
    child.once("error", (err) => reject(err));
    child.once("exit", (code, signal) => reject(new Error(`nats-server exited (${code ?? signal}) before accepting connections:\n${log}`)));
  });
  exited.catch(() => undefined);
  const deadline = Date.now() + READY_TIMEOUT_MS;
  try {
    for (;;) {
      // Ready = accepting connections and it is ours (a racing process could hold the port).
      const up = await Promise.race([canConnect(port), exited]);
      if (up && log.includes("Server is ready")) return child;
      if (Date.now() > deadline) throw new Error(`nats-server did not accept connections on ${port} within ${READY_TIMEOUT_MS} ms:\n${log}`);
      await Promise.race([new Promise((resolve) => setTimeout(resolve, 20)), exited]);
    }
  } catch (err) {
    await terminate(child);
    throw err;
  }
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** A TCP port free on loopback right now (tests start their processes on it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** Ends `child` (by its PID only): SIGTERM, then SIGKILL if it has not exited after 5 s. */
async function terminate(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  process.kill(child.pid, "SIGTERM");
  const timer = setTimeout(() => {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, "SIGKILL");
  }, 5000);
  await exited;
  clearTimeout(timer);
}

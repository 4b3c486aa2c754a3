/**
 * A whole Strata cluster of real processes on loopback, for failover tests and benches:
 * nats-server (one, or three routed together), a coordinator and N persistence servers, each
 * started through the CLI (`node --import tsx src/cli/main.ts …`) as a child process
 * (./process.ts), all servers sharing one `dir:` tier in a temp dir.
 *
 *   const c = await startCluster({ servers: 3, leaseMs: 2000, sealIntervalMs: 200 });
 *   const client = await c.client();             // StrataClient on its own connection
 *   await c.locate("acct/a/chat");               // raw P.coord.locate answer { server, epoch? } | { code }
 *   await c.server("s2").kill9();                // SIGKILL by PID, resolves once it has exited
 *   await c.server("s2").restart();              // same id, same data dir, new PID
 *   await c.coordinator.pause(); …resume();      // SIGSTOP / SIGCONT
 *   await c.cli(["drain", "s1"]);                // any `strata` command, --nats appended
 *   await c.stop();                              // in afterAll: kills every PID it started
 *
 * Benches add `prepare` (write the coordinator's state before anything starts) and `serverScript`
 * (servers run by a script of their own, with an IPC channel: `c.server("s1").request(…)`).
 *
 * Ownership: only processes started here are ever signalled, always by their PID. stop() and a
 * start that fails half way end everything started so far (SIGKILL: teardown needs no grace),
 * close every connection handed out, and remove the temp dir. A process-exit hook kills children
 * left behind if the test runner dies. Readiness is an event (the process logs "ready", a routed
 * message arrives), never a fixed sleep; `waitFor` polls a condition with a bound where no event
 * exists. Each process keeps the tail of its output for diagnostics (`c.diagnostics()`).
 */
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type ConnectionOptions, type NatsConnection } from "nats";
import { StrataClient, type StrataClientOptions } from "../net/client/client.js";
import { decodeUntrusted, encode, isPlainMap } from "../net/wire/wire-codec.js";
import { freePort, startNatsServer, type RunningNatsServer } from "./nats-server.js";
import { EXIT_TIMEOUT_MS, StrataProcess, pidAlive, runCli, waitFor, type Proc } from "./process.js";

export { pidAlive, runCli, waitFor, type Proc };

/**
 * A server's ready line: `server "<id>" ready` as a script prints it, or the `strata server` JSON
 * log line, whose message has the quotes escaped (`server \"<id>\" ready`).
 */
export const SERVER_READY = /server \\?"[^"\\]+\\?" ready/;

export interface ClusterOptions {
  /** Persistence servers, ids s1..sN. Default 3. */
  servers?: number;
  /** NATS nodes: 1, or 3 routed together as one cluster. Default 1. */
  natsNodes?: 1 | 3;
  /** `--lease-ms` for the coordinator; omitted when undefined (the CLI's default applies). */
  leaseMs?: number;
  /** `--seal-interval-ms` for every server. */
  sealIntervalMs?: number;
  /** Subject prefix; default "strata". */
  prefix?: string;
  /** Extra arguments for the coordinator / every server. */
  coordinatorArgs?: string[];
  serverArgs?: string[];
  /**
   * Which NATS node (index into `nats`) each process connects to: "coordinator" or a server id.
   * Default: the coordinator on node 0, server k (1-based) on node (k-1) mod nodes.
   */
  nodeOf?: (name: string) => number;
  /**
   * Runs before any process starts, with the directories the processes will use (e.g. a bench
   * writes the coordinator's state there directly).
   */
  prepare?: (dirs: { dir: string; coordinatorDir: string; tierDir: string }) => void | Promise<void>;
  /**
   * A script (path from the repository root) run for each server instead of `src/cli/main.ts`,
   * with the same arguments and an IPC channel (`Proc.request`); it must log `server "<id>" ready`.
   */
  serverScript?: string;
}

export interface NatsNode {
  readonly url: string;
  readonly pid: number;
  /** SIGKILL by PID; resolves once it is gone. */
  kill9(): Promise<void>;
  stop(): Promise<void>;
}

export type LocateAnswer = { server: string; epoch?: number } | { code: string; message: string; server?: string };

export interface Cluster {
  /** Root temp dir (removed by stop()). */
  readonly dir: string;
  /** The shared object-store dir; servers get `--tier dir:<tierDir>`. */
  readonly tierDir: string;
  readonly prefix: string;
  readonly nats: NatsNode[];
  /** Every node's URL, comma-separated (what CLI tools are given). */
  readonly natsUrl: string;
  readonly coordinator: Proc;
  readonly servers: Proc[];
  readonly serverIds: string[];
  server(id: string): Proc;
  /** Adds and starts another server (id sK). */
  addServer(id: string): Promise<Proc>;
  /** A NATS connection to node `node` (default 0), closed by stop(). */
  connect(node?: number, options?: Partial<ConnectionOptions>): Promise<NatsConnection>;
  /** A StrataClient on its own connection to node `node`, closed by stop(). */
  client(options?: StrataClientOptions, node?: number): Promise<StrataClient>;
  /** One raw `P.coord.locate` request (no retry): the answer or the coded error. */
  locate(location: string, timeoutMs?: number): Promise<LocateAnswer>;
  /** Runs `strata <args> --nats <natsUrl>` to its end. */
  cli(args: string[], options?: { timeoutMs?: number; withNats?: boolean }): Promise<{ code: number | null; stdout: string; stderr: string }>;
  /** Every process's output tail, for a failure message. */
  diagnostics(): string;
  stop(): Promise<void>;
}

export async function startCluster(options: ClusterOptions = {}): Promise<Cluster> {
  const prefix = options.prefix ?? "strata";
  const nodes = options.natsNodes ?? 1;
  const serverCount = options.servers ?? 3;
  const dir = await mkdtemp(join(tmpdir(), "strata-cluster-"));
  const tierDir = join(dir, "tier");
  const natsServers: RunningNatsServer[] = [];
  const procs: StrataProcess[] = [];
  const connections: NatsConnection[] = [];
  const clients: StrataClient[] = [];
  let locateNc: NatsConnection | undefined;
  const onExit = () => {
    for (const p of procs) p.killNow();
  };
  process.once("exit", onExit);

  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      for (const c of clients) c.close();
      await Promise.all(connections.map((nc) => nc.close().catch(() => undefined)));
      await Promise.all(procs.map((p) => p.kill9().catch(() => undefined)));
      await Promise.all(natsServers.map((n) => n.stop().catch(() => undefined)));
      process.removeListener("exit", onExit);
      await rm(dir, { recursive: true, force: true });
    })();
    return stopped;
  };

  try {
    await mkdir(tierDir);
    await options.prepare?.({ dir, coordinatorDir: join(dir, "coordinator"), tierDir });
    natsServers.push(...(await startNatsNodes(nodes)));
    const natsNodes: NatsNode[] = natsServers.map((n) => natsNode(n));
    const nodeOf = options.nodeOf ?? ((name: string) => (name === "coordinator" ? 0 : (Number(name.slice(1)) - 1) % nodes));
    const urlFor = (name: string) => natsServers[nodeOf(name) % nodes]!.url;

    const coordinatorArgs = [
      "coordinator",
      "--data", join(dir, "coordinator"),
      "--nats", urlFor("coordinator"),
      "--prefix", prefix,
      ...(options.leaseMs !== undefined ? ["--lease-ms", String(options.leaseMs)] : []),
      ...(options.coordinatorArgs ?? []),
    ];
    const coordinator = new StrataProcess("coordinator", coordinatorArgs, /coordinator ready/);
    procs.push(coordinator);
    const serverArgs = (id: string) => [
      "server",
      "--id", id,
      "--data", join(dir, id),
      "--nats", urlFor(id),
      "--prefix", prefix,
      "--tier", `dir:${tierDir}`,
      ...(options.sealIntervalMs !== undefined ? ["--seal-interval-ms", String(options.sealIntervalMs)] : []),
      ...(options.serverArgs ?? []),
    ];
    const serverProcess = options.serverScript !== undefined ? { script: options.serverScript, ipc: true } : {};
    const servers: StrataProcess[] = [];
    const serverIds: string[] = [];
    for (let k = 1; k <= serverCount; k++) {
      const id = `s${k}`;
      const p = new StrataProcess(id, serverArgs(id), SERVER_READY, serverProcess);
      servers.push(p);
      serverIds.push(id);
      procs.push(p);
    }
    // The coordinator first, so servers find it when they register; servers in parallel.
    await coordinator.start();
    await Promise.all(servers.map((s) => s.start()));

    const cluster: Cluster = {
      dir,
      tierDir,
      prefix,
      nats: natsNodes,
      natsUrl: natsServers.map((n) => n.url).join(","),
      coordinator,
      servers,
      serverIds,
      server(id) {
        const p = servers.find((s) => s.name === id);
        if (!p) throw new Error(`no server "${id}" in this cluster (${serverIds.join(", ")})`);
        return p;
      },
      async addServer(id) {
        const p = new StrataProcess(id, serverArgs(id), SERVER_READY, serverProcess);
        procs.push(p);
        servers.push(p);
        serverIds.push(id);
        await p.start();
        return p;
      },
      async connect(node = 0, extra = {}) {
        const nc = await connect({ servers: natsServers[node]!.url, maxReconnectAttempts: -1, reconnectTimeWait: 250, ...extra });
        connections.push(nc);
        return nc;
      },
      async client(clientOptions = {}, node = 0) {
        const nc = await cluster.connect(node);
        const client = new StrataClient(nc, { prefix, ...clientOptions });
        clients.push(client);
        return client;
      },
      async locate(location, timeoutMs = 5000) {
        if (!locateNc) {
          locateNc = await connect({ servers: natsServers.map((n) => n.url), maxReconnectAttempts: -1, reconnectTimeWait: 250 });
          connections.push(locateNc);
        }
        const nc = locateNc;
        const msg = await nc.request(`${prefix}.coord.locate`, encode({ location }), { timeout: timeoutMs });
        const code = msg.headers?.get("Strata-Error");
        if (code) {
          const server = msg.headers?.get("Strata-Server");
          return { code, message: msg.headers?.get("Strata-Message") ?? "", ...(server ? { server } : {}) };
        }
        const body = decodeUntrusted(msg.data, "locate reply");
        if (!isPlainMap(body) || typeof body.server !== "string") throw new Error(`malformed locate reply: ${JSON.stringify(body)}`);
        return { server: body.server, ...(typeof body.epoch === "number" ? { epoch: body.epoch } : {}) };
      },
      cli(args, cliOptions = {}) {
        const withNats = cliOptions.withNats ?? true;
        const extra = withNats ? ["--nats", cluster.natsUrl, ...(prefix !== "strata" ? ["--prefix", prefix] : [])] : [];
        return runCli([...args, ...extra], cliOptions.timeoutMs ?? 30_000);
      },
      diagnostics() {
        return procs.map((p) => `----- ${p.name} (pid ${p.pidOrNone()}, ${p.running ? (p.paused ? "paused" : "running") : "exited"}) -----\n${p.output()}`).join("\n");
      },
      stop,
    };
    return cluster;
  } catch (err) {
    const diag = procs.map((p) => `----- ${p.name} -----\n${p.output()}`).join("\n");
    await stop();
    throw new Error(`could not start the cluster: ${(err as Error).message}\n${diag}`, { cause: err });
  }
}

function natsNode(n: RunningNatsServer): NatsNode {
  return {
    get url() {
      return n.url;
    },
    get pid() {
      return n.pid;
    },
    async kill9() {
      const pid = n.pid;
      if (!pidAlive(pid)) return;
      process.kill(pid, "SIGKILL");
      await waitFor(`nats-server pid ${pid} to exit`, () => !pidAlive(pid), EXIT_TIMEOUT_MS, 20);
    },
    stop: () => n.stop(),
  };
}

/**
 * One nats-server, or three routed together as a cluster on loopback. Cluster readiness is an
 * event: a message published on every node reaches a subscriber on every other node.
 */
async function startNatsNodes(count: 1 | 3): Promise<RunningNatsServer[]> {
  if (count === 1) return [await startNatsServer()];
  const clusterPorts = [await freePort(), await freePort(), await freePort()];
  const started: RunningNatsServer[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      const routes = clusterPorts.filter((_, j) => j !== i).map((p) => `"nats-route://127.0.0.1:${p}"`);
      const config = `cluster {\n  name: strata-test\n  listen: "127.0.0.1:${clusterPorts[i]}"\n  routes: [${routes.join(", ")}]\n}\n`;
      started.push(await startNatsServer({ config }));
    }
    await waitForRoutes(started);
    return started;
  } catch (err) {
    await Promise.all(started.map((n) => n.stop()));
    throw err;
  }
}

async function waitForRoutes(nodes: RunningNatsServer[]): Promise<void> {
  const ncs = await Promise.all(nodes.map((n) => connect({ servers: n.url })));
  try {
    const subject = `_harness.routes.${Date.now()}`;
    const seen = new Set<string>();
    for (let i = 0; i < ncs.length; i++) {
      ncs[i]!.subscribe(subject, { callback: (_err, msg) => seen.add(`${new TextDecoder().decode(msg.data)}->${i}`) });
      await ncs[i]!.flush();
    }
    const want = ncs.length * (ncs.length - 1);
    await waitFor(
      "the three nats-servers to route to each other",
      async () => {
        for (let i = 0; i < ncs.length; i++) ncs[i]!.publish(subject, new TextEncoder().encode(String(i)));
        await Promise.all(ncs.map((nc) => nc.flush()));
        return [...seen].filter((k) => k.split("->")[0] !== k.split("->")[1]).length >= want;
      },
      15_000,
      100,
    );
  } finally {
    await Promise.all(ncs.map((nc) => nc.close()));
  }
}


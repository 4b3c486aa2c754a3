/**
 * The set-up most wire tests share, so each file states only what is particular to it.
 *
 *   const bus = await startBus();               // nats-server + one connection + a temp dir
 *   const stack = await startStack({ id: "s1" }); // … plus a Store in `dir/store`, served in-process
 *   await stack.stop();                         // in afterAll
 *
 * It owns everything it starts: the nats-server (src/testing/nats-server.ts), the temp dir (and every
 * tempDir() below it), the connection `nc`, and for a stack the Store and the in-process server.
 * stop() ends them in reverse order of their dependencies (server, store, connection, nats-server,
 * files), so a server that shares `nc` is stopped before `nc` closes. A start that fails half way
 * stops what it had started before throwing. Clients and any other servers stay the test's own:
 * close them before stop().
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "nats";
import type { StoreOptions } from "../../src/config.js";
import { startServer, type ServerOptions, type StrataServer } from "../../src/net/server/server.js";
import { Store } from "../../src/store.js";
import { startNatsServer, type NatsServerOptions, type RunningNatsServer } from "../../src/testing/nats-server.js";

export interface Bus {
  nats: RunningNatsServer;
  /** A plain connection to `nats` for the test (raw requests, clients, coordinators). */
  nc: NatsConnection;
  /** A temp dir removed by stop(). */
  dir: string;
  /** A fresh dir below `dir` (removed with it). */
  tempDir(name: string): Promise<string>;
  stop(): Promise<void>;
}

export interface Stack extends Bus {
  /** The store in `dir/store`, served by `server`. */
  store: Store;
  server: StrataServer;
}

export interface StackOptions {
  nats?: NatsServerOptions;
  /** Server id, also the store's id. Default "s1". */
  id?: string;
  store?: Omit<StoreOptions, "dir" | "id">;
  /** Any other startServer options (prefix, limits, logger, …). */
  server?: Omit<ServerOptions, "id" | "store" | "dir" | "storeOptions" | "nats">;
  /** The server uses the test's `nc` instead of a connection of its own. */
  shareConnection?: boolean;
}

export async function startBus(natsOptions?: NatsServerOptions): Promise<Bus> {
  const nats = await startNatsServer(natsOptions);
  let nc: NatsConnection | undefined;
  let dir: string | undefined;
  const stop = async () => {
    await nc?.close();
    await nats.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  };
  try {
    dir = await mkdtemp(join(tmpdir(), "strata-test-"));
    nc = await connect({ servers: nats.url });
  } catch (err) {
    await stop();
    throw err;
  }
  const root = dir;
  return { nats, nc, dir: root, tempDir: (name) => mkdtemp(join(root, `${name}-`)), stop };
}

export async function startStack(options: StackOptions = {}): Promise<Stack> {
  const bus = await startBus(options.nats);
  const id = options.id ?? "s1";
  let store: Store | undefined;
  let server: StrataServer | undefined;
  const stop = async () => {
    await server?.stop();
    await store?.close();
    await bus.stop();
  };
  try {
    store = await Store.open({ ...options.store, dir: join(bus.dir, "store"), id });
    // Standalone unless the test brings a coordinator (options.server.standalone: false).
    server = await startServer({ standalone: true, ...options.server, store, id, nats: options.shareConnection ? bus.nc : bus.nats.url });
  } catch (err) {
    await stop();
    throw err;
  }
  return { ...bus, store, server, stop };
}

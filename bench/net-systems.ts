/**
 * The systems the net benchmark compares, behind one small interface so that every workload runs
 * the same code against each: Strata (StrataClient → core NATS → a strata server in a child
 * process; once with fsync'd acks, once with `fsync: "interval"`) and NATS JetStream (nats.js
 * `jetstream()` / `jetstreamManager()` / `views.kv()` → the same nats-server), plus the trivial
 * core NATS echo responder that gives the request/reply ceiling.
 *
 * Each system gets its own NATS connection from the benchmark process. Strata's client is pinned
 * to its one server (no coordinator), as `strata up` would place every location on it anyway;
 * with `coordinated` a coordinator child runs too, the server registers with it and the client
 * locates through it (the new-locations row and the coordinated append row).
 */
import path from "node:path";
import { connect, createInbox, StorageType, type JetStreamClient, type JetStreamManager, type NatsConnection } from "nats";
import { StrataClient } from "../src/net/client/client.js";
import { startBenchServer, type BenchServer } from "./net-server-child.js";

export type SystemName = "strataFsyncAlways" | "strataFsyncInterval" | "jetstream";

export interface BenchStream {
  append(value: Uint8Array): Promise<void>;
  /** All of `values` in one request (Strata's appendMany); undefined where the system has none. */
  appendMany?: (values: Uint8Array[]) => Promise<void>;
  /** Reads the whole stream from its first message; resolves to the count, checking each size. */
  readAll(expected: number, valueBytes: number): Promise<number>;
  get(seq: number): Promise<Uint8Array | undefined>;
}

export interface BenchKv {
  put(key: string, value: Uint8Array): Promise<void>;
  get(key: string): Promise<Uint8Array | undefined>;
}

export interface BenchSystem {
  readonly name: SystemName;
  /** Processes besides this one whose CPU is metered, by role. */
  readonly pids: Readonly<Record<string, number | undefined>>;
  stream(name: string): Promise<BenchStream>;
  kv(name: string): Promise<BenchKv>;
  /** Removes streams made by `stream(name)` where the system can (JetStream deletes them; a Strata location stays). */
  discard?(names: string[]): Promise<void>;
  close(): Promise<void>;
}

export interface StrataSystemOptions {
  name: "strataFsyncAlways" | "strataFsyncInterval";
  natsUrl: string;
  natsPid: number | undefined;
  dir: string;
  cpuProfDir?: string;
  /** A coordinator child too; the server registers with it, the client locates through it. */
  coordinated?: boolean;
  /** The server records metrics and serves them on this port (bench/net-metrics.ts). */
  metricsPort?: number;
}

const SERVER_ID = "bench";

export async function startStrataSystem(options: StrataSystemOptions): Promise<BenchSystem> {
  const fsync = options.name === "strataFsyncAlways" ? "always" : "interval";
  const coordinated = options.coordinated === true;
  const prof = options.cpuProfDir !== undefined ? { cpuProfDir: options.cpuProfDir } : {};
  // Both children start at once: the server registers (retrying) as soon as the coordinator answers.
  const [coordinatorStart, serverStart] = await Promise.allSettled([
    coordinated ? startBenchServer({ role: "coordinator", url: options.natsUrl, dir: path.join(options.dir, "coordinator"), ...prof }) : Promise.resolve(undefined),
    startBenchServer({
      role: "strata",
      url: options.natsUrl,
      dir: coordinated ? path.join(options.dir, "server") : options.dir,
      id: SERVER_ID,
      fsync,
      ...(coordinated ? { coordinated } : {}),
      ...(options.metricsPort !== undefined ? { metricsPort: options.metricsPort } : {}),
      ...prof,
    }),
  ]);
  const coordinator = coordinatorStart.status === "fulfilled" ? coordinatorStart.value : undefined;
  const server = serverStart.status === "fulfilled" ? serverStart.value : undefined;
  let nc: NatsConnection;
  try {
    if (coordinatorStart.status === "rejected") throw coordinatorStart.reason;
    if (serverStart.status === "rejected") throw serverStart.reason;
    nc = await connect({ servers: options.natsUrl, name: `strata-bench-${options.name}` });
  } catch (err) {
    await server?.stop();
    await coordinator?.stop();
    throw err;
  }
  const client = coordinated ? new StrataClient(nc) : new StrataClient(nc, { server: SERVER_ID });
  const pids = { strataServer: server!.pid, natsServer: options.natsPid, ...(coordinator ? { coordinator: coordinator.pid } : {}) };
  return new StrataSystem(options.name, server!, nc, client, pids, coordinator);
}

class StrataSystem implements BenchSystem {
  constructor(
    readonly name: "strataFsyncAlways" | "strataFsyncInterval",
    private readonly server: BenchServer,
    private readonly nc: NatsConnection,
    private readonly client: StrataClient,
    readonly pids: Readonly<Record<string, number | undefined>>,
    private readonly coordinator?: BenchServer,
  ) {}

  async stream(name: string): Promise<BenchStream> {
    const s = this.client.stream(`bench/${name}`);
    return {
      append: async (value) => {
        await s.append({ value });
      },
      appendMany: async (values) => {
        const results = await s.appendMany(values.map((value) => ({ message: { value } })));
        const failed = results.find((r) => !r.ok);
        if (failed) throw new Error(`appendMany item failed: ${JSON.stringify(failed)}`);
      },
      readAll: async (expected, valueBytes) => {
        let n = 0;
        for await (const m of s.getAll()) {
          if (m.value.byteLength !== valueBytes) throw new Error(`strata getAll: seq ${m.seq} has ${m.value.byteLength} bytes, expected ${valueBytes}`);
          n++;
        }
        if (n !== expected) throw new Error(`strata getAll read ${n} messages, expected ${expected}`);
        return n;
      },
      get: async (seq) => (await s.get(seq))?.value,
    };
  }

  async kv(name: string): Promise<BenchKv> {
    const kv = this.client.kv(`bench/${name}`);
    return {
      put: async (key, value) => {
        await kv.set(key, value);
      },
      get: async (key) => (await kv.get(key))?.value,
    };
  }

  async close(): Promise<void> {
    this.client.close();
    try {
      await this.nc.close();
    } finally {
      await this.server.stop();
      await this.coordinator?.stop();
    }
  }
}

interface DirectGets {
  getMessage(stream: string, query: { seq: number }): Promise<{ data: Uint8Array }>;
}

/**
 * Messages an ordered consumer asks for at once when reading a stream back: the fastest of 100
 * (nats.js's default), 1000 and 5000 here, and about the bytes Strata's getAll keeps in flight
 * (8 batches of up to 1000 items).
 */
const JS_READ_BATCH = 5000;

export async function startJetStreamSystem(natsUrl: string, natsPid: number | undefined): Promise<BenchSystem> {
  const nc = await connect({ servers: natsUrl, name: "strata-bench-jetstream" });
  try {
    const jsm = await nc.jetstreamManager();
    return new JetStreamSystem(nc, nc.jetstream(), jsm, { natsServer: natsPid });
  } catch (err) {
    await nc.close();
    throw new Error(`JetStream is not available on ${natsUrl} (is nats-server running with -js?): ${(err as Error).message}`, { cause: err });
  }
}

class JetStreamSystem implements BenchSystem {
  readonly name = "jetstream" as const;
  private readonly streams: string[] = [];
  private readonly buckets: string[] = [];

  constructor(
    private readonly nc: NatsConnection,
    private readonly js: JetStreamClient,
    private readonly jsm: JetStreamManager,
    readonly pids: Readonly<Record<string, number | undefined>>,
  ) {}

  async stream(name: string): Promise<BenchStream> {
    const stream = `BENCH_${name.replace(/[^A-Za-z0-9]/g, "_").toUpperCase()}`;
    const subject = `bench.${name.replace(/[^A-Za-z0-9]/g, "_")}`;
    // File storage, one replica, defaults otherwise (JetStream 2.9 acks before it fsyncs).
    // Direct get lets gets bypass the JetStream API layer, JetStream's fastest read path.
    await this.jsm.streams.add({ name: stream, subjects: [subject], storage: StorageType.File, num_replicas: 1, allow_direct: true });
    this.streams.push(stream);
    const { js, jsm } = this;
    // Direct get (JetStream's fastest read path) is on nats.js's manager but not in its typings.
    const direct = (jsm as JetStreamManager & { direct?: DirectGets }).direct;
    const getMessage = direct ? direct.getMessage.bind(direct) : jsm.streams.getMessage.bind(jsm.streams);
    return {
      append: async (value) => {
        await js.publish(subject, value);
      },
      readAll: async (expected, valueBytes) => {
        const consumer = await js.consumers.get(stream);
        const messages = await consumer.consume({ max_messages: JS_READ_BATCH });
        let n = 0;
        try {
          for await (const m of messages) {
            if (m.data.byteLength !== valueBytes) throw new Error(`jetstream read: seq ${m.seq} has ${m.data.byteLength} bytes, expected ${valueBytes}`);
            if (++n >= expected) break;
          }
        } finally {
          await messages.close();
        }
        if (n !== expected) throw new Error(`jetstream read ${n} messages, expected ${expected}`);
        return n;
      },
      get: async (seq) => (await getMessage(stream, { seq })).data,
    };
  }

  async discard(names: string[]): Promise<void> {
    for (const name of names) {
      const stream = `BENCH_${name.replace(/[^A-Za-z0-9]/g, "_").toUpperCase()}`;
      const i = this.streams.indexOf(stream);
      if (i < 0) continue;
      await this.jsm.streams.delete(stream);
      this.streams.splice(i, 1);
    }
  }

  async kv(name: string): Promise<BenchKv> {
    const bucket = `bench_${name.replace(/[^A-Za-z0-9]/g, "_")}`;
    const kv = await this.js.views.kv(bucket, { history: 1, storage: StorageType.File });
    this.buckets.push(bucket);
    return {
      put: async (key, value) => {
        await kv.put(key, value);
      },
      get: async (key) => (await kv.get(key))?.value,
    };
  }

  /** Deletes the streams and buckets it made, so runs do not pile up data in nats-server. */
  async close(): Promise<void> {
    try {
      for (const stream of this.streams.splice(0)) await this.jsm.streams.delete(stream);
      for (const bucket of this.buckets.splice(0)) await this.jsm.streams.delete(`KV_${bucket}`);
    } finally {
      await this.nc.close();
    }
  }
}

/** The core NATS request/reply ceiling: a trivial echo responder in a child process. */
export interface EchoSystem {
  /** nats.js `nc.request()`: one request, one reply (what a JetStream publish rides on). */
  request(payload: Uint8Array): Promise<void>;
  /** The least a client can do: publish with a reply subject under one wildcard inbox subscription (as StrataClient does). */
  muxRequest(payload: Uint8Array): Promise<void>;
  readonly pids: Readonly<Record<string, number | undefined>>;
  close(): Promise<void>;
}

const ECHO_SUBJECT = "strata-bench.echo";
/** A mux request with no reply after this long fails (the sweep runs every second). */
const ECHO_TIMEOUT_MS = 10_000;

export async function startEchoSystem(natsUrl: string, natsPid: number | undefined): Promise<EchoSystem> {
  const server = await startBenchServer({ role: "echo", url: natsUrl, subject: ECHO_SUBJECT });
  let nc: NatsConnection;
  try {
    nc = await connect({ servers: natsUrl, name: "strata-bench-echo-client" });
  } catch (err) {
    await server.stop();
    throw err;
  }
  const inbox = createInbox();
  const waiting = new Map<string, { resolve: () => void; reject: (err: Error) => void; sentAt: number }>();
  nc.subscribe(`${inbox}.*`, {
    callback: (_err, msg) => {
      const token = msg.subject.slice(inbox.length + 1);
      const w = waiting.get(token);
      waiting.delete(token);
      w?.resolve();
    },
  });
  await nc.flush();
  // One sweep for all requests rather than a timer each: the ceiling should cost the client the least.
  const sweep = setInterval(() => {
    const now = performance.now();
    for (const [token, w] of waiting) {
      if (now - w.sentAt < ECHO_TIMEOUT_MS) continue;
      waiting.delete(token);
      w.reject(new Error(`no echo within ${ECHO_TIMEOUT_MS} ms`));
    }
  }, 1000);
  let next = 0;
  return {
    pids: { echoServer: server.pid, natsServer: natsPid },
    request: async (payload) => {
      await nc.request(ECHO_SUBJECT, payload, { timeout: ECHO_TIMEOUT_MS });
    },
    muxRequest: (payload) =>
      new Promise<void>((resolve, reject) => {
        const token = (next++).toString(36);
        waiting.set(token, { resolve, reject, sentAt: performance.now() });
        nc.publish(ECHO_SUBJECT, payload, { reply: `${inbox}.${token}` });
      }),
    close: async () => {
      clearInterval(sweep);
      try {
        await nc.close();
      } finally {
        await server.stop();
      }
    },
  };
}

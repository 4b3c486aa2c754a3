/**
 * Read-only users cannot exhaust a server's memory (issue #8, item 4).
 *
 * Against a strata server in a child process (its RSS is what is measured) and a real nats-server,
 * hostile readers all at once: getAll streams that never grant credit, a raw NATS client that
 * sends gets of a 1000 KiB value and never reads its socket, and `batch` requests of hundreds of
 * such gets. The server's RSS must stay within its reply budget, and another client's small get
 * must keep being answered. Without the reply budget the same load takes the server past 1 GiB.
 *
 * The budget is configured small (32 MiB) so the test is quick; the default arithmetic is checked
 * in the unit tests at the end.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, createInbox, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { DEFAULT_LIMITS } from "../../src/limits.js";
import { StrataClient } from "../../src/net/client/client.js";
import { DEFAULT_NET_LIMITS, resolveNetLimits, type NetLimits } from "../../src/net/wire/net-limits.js";
import { OutboundMeter } from "../../src/net/server/outbound-meter.js";
import { ReplyBudget } from "../../src/net/server/reply-budget.js";
import { startNatsServer, type RunningNatsServer } from "../../src/testing/nats-server.js";
import { encodeRequest, RawNatsClient, readSubject, starveStreams } from "./hostile-readers.js";
import { startChildServer, type ChildServer } from "./server-child.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const REPLY_BUDGET = 32 * MiB;
const LIMITS: Partial<NetLimits> = { replyBytesInFlightMax: REPLY_BUDGET, readRequestBytesInFlightMax: 4 * MiB, batchReplyBytesMax: 4 * MiB };
const BIG = 1000 * KiB;

let nats: RunningNatsServer;
let dir: string;
let server: ChildServer;
let nc: NatsConnection;
let client: StrataClient;

beforeAll(async () => {
  nats = await startNatsServer();
  dir = await mkdtemp(join(tmpdir(), "strata-memory-"));
  server = await startChildServer({ dir, url: nats.url, id: "mem", limits: LIMITS });
  nc = await connect({ servers: nats.url });
  client = new StrataClient(nc, { server: "mem", timeoutMs: 20_000 });
  const s = client.stream("mem/s");
  for (let i = 0; i < 48; i++) await s.append({ value: randomBytes(240 * KiB) });
  const kv = client.kv("mem/kv");
  await kv.set("big", randomBytes(BIG));
  await kv.set("small", Buffer.from("ok"));
});

afterAll(async () => {
  client?.close();
  await nc?.close();
  await server?.kill();
  await nats?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("hostile readers", () => {
  it("keep the server's RSS within its reply budget while another client is served", async () => {
    const base = (await server.stats()).rss;
    const hostileNc = await connect({ servers: nats.url, name: "hostile" });
    const probeNc = await connect({ servers: nats.url, name: "probe" });
    const probe = new StrataClient(probeNc, { server: "mem", timeoutMs: 5000 });
    let peak = base;
    let active = true;
    let unresponsive = 0;
    const sampler = (async () => {
      while (active) {
        // A server too busy to answer its stats within seconds counts as a failure, not a hang.
        const sample = await Promise.race([server.stats(), new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 3000))]);
        if (sample) peak = Math.max(peak, sample.rss);
        else unresponsive += 1;
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
    })();
    const probes: number[] = [];
    const probeErrors: string[] = [];
    const prober = (async () => {
      while (active) {
        const started = Date.now();
        try {
          const got = await probe.kv("mem/kv").get("small");
          if (Buffer.from(got!.value).toString() !== "ok") probeErrors.push("wrong value");
        } catch (err) {
          probeErrors.push(String(err));
        }
        probes.push(Date.now() - started);
      }
    })();
    const raw = await RawNatsClient.connect(nats.port);
    let received = 0;
    try {
      // 1. getAll streams that never grant credit (the replies that arrive are dropped).
      const starved = starveStreams(hostileNc, "mem", "mem/s", 100);
      // 2. A client that never reads its socket asks for 300 × 1000 KiB.
      const get = encodeRequest({ op: "kv.get", key: "big" });
      for (let i = 0; i < 300; i++) raw.request(readSubject("mem", "mem/kv"), get, i);
      await raw.flushed();
      // 3. Batches of 300 gets of the big value each (a ~10 KB request for a 300 MB reply).
      const inbox = createInbox();
      hostileNc.subscribe(`${inbox}.*`, { callback: () => undefined });
      const batch = encodeRequest({ op: "batch", items: Array.from({ length: 300 }, () => get) });
      for (let i = 0; i < 3; i++) hostileNc.publish(readSubject("mem", "mem/kv"), batch, { reply: `${inbox}.${i}` });
      // The load runs for 5 s, and until the starved streams have had their first messages (on a
      // busy machine that can take longer; bounded).
      const loadEnds = Date.now() + 5000;
      while ((Date.now() < loadEnds || starved.received() === 0) && Date.now() < loadEnds + 20_000) {
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      received = starved.received();
    } finally {
      active = false;
      await sampler;
      await prober;
      raw.close();
      probe.close();
      await probeNc.close();
      await hostileNc.close();
    }
    expect(unresponsive, "the server did not answer its stats within 3 s").toBe(0);
    const { stats } = await server.stats();
    const growth = peak - base;
    // What the budget allows: the budget itself, nats.js's copy of the outbound bytes, and slack
    // for garbage not yet collected. Without the budget this load grows the server past 1 GiB.
    expect(growth, `RSS grew by ${Math.round(growth / MiB)} MiB (stats ${JSON.stringify(stats)})`).toBeLessThan(2 * REPLY_BUDGET + 64 * MiB);
    expect(stats.replyBytesHighWater).toBeLessThanOrEqual(REPLY_BUDGET + 2 * MiB);
    // The other client kept being served, and more than once: the hostile load did not wedge the server.
    expect(stats.replyBudgetRefused).toBeGreaterThan(0);
    expect(probeErrors).toEqual([]);
    // The starved streams got their first messages (or an UNAVAILABLE): the load really ran.
    expect(received).toBeGreaterThan(0);
    expect(probes.length, `probe latencies ${probes.join(",")}`).toBeGreaterThanOrEqual(10);
    expect(Math.max(...probes), `probe latencies ${probes.join(",")}`).toBeLessThan(3000);
  }, 60_000);
});

describe("reply budget", () => {
  const meter = (nc: Partial<NatsConnection>) => new OutboundMeter({ isClosed: () => false, ...nc } as NatsConnection, () => undefined);

  it("waits for room, then answers UNAVAILABLE; streams get at most half", async () => {
    const m = meter({ flush: () => Promise.resolve() });
    const budget = new ReplyBudget(100, 50, m, m);
    const a = await budget.reserve(60);
    await expect(budget.reserve(45, "stream")).rejects.toMatchObject({ code: "UNAVAILABLE" });
    await expect(budget.reserve(51, "stream")).rejects.toMatchObject({ code: "TOO_LARGE" });
    const waiting = budget.reserve(50);
    a.release();
    const b = await waiting;
    expect(budget.used()).toBe(50);
    b.release();
    b.release(); // idempotent
    expect(budget.used()).toBe(0);
  });

  it("counts published bytes until nats-server has taken them (a flush returned)", async () => {
    let pong!: () => void;
    const m = meter({ flush: () => new Promise<void>((resolve) => (pong = resolve)) });
    m.add(1000);
    m.add(1000);
    expect(m.pending()).toBeGreaterThanOrEqual(2000);
    // The second message went out after the first flush was sent: it needs a flush of its own.
    pong();
    await new Promise((resolve) => setImmediate(resolve));
    expect(m.pending()).toBeGreaterThan(0);
    expect(m.pending()).toBeLessThan(2000);
    pong();
    await new Promise((resolve) => setImmediate(resolve));
    expect(m.pending()).toBe(0);
  });

  it("the default budgets fit the default memory target", () => {
    const l = DEFAULT_NET_LIMITS;
    expect(l.serverMemoryBytesMax).toBeLessThanOrEqual(512 * MiB);
    expect(l.serverBaseBytes + 2 * l.replyBytesInFlightMax + 3 * l.readRequestBytesInFlightMax).toBeLessThanOrEqual(l.serverMemoryBytesMax);
    // A stream's standing hold at nats-server's default max_payload (1 MiB): the message it fills,
    // the record it carries over and the read buffer they share. The streams' half of the budget
    // must hold a useful number of them.
    const hold = 1 * MiB + DEFAULT_LIMITS.recordBytesMax + DEFAULT_LIMITS.scanReadBytesMax;
    expect(Math.floor(l.replyBytesInFlightMax / 2 / hold)).toBeGreaterThanOrEqual(16);
    // The window alone (replyWindowMessages × max_payload × replyStreamsMax) would be 8 GiB: the
    // budget, not the window, is what bounds memory.
    expect(l.replyWindowMessages * MiB * l.replyStreamsMax).toBeGreaterThan(l.replyBytesInFlightMax * 32);
    expect(() => resolveNetLimits({ replyBytesInFlightMax: 512 * MiB })).toThrow(StrataError);
    expect(() => resolveNetLimits({ batchReplyBytesMax: 64 * MiB })).toThrow(/batchReplyBytesMax/);
  });
});

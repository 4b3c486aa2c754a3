/**
 * Messages of any size, against a nats-server whose max_payload is 64 KiB and a strata server in
 * a child process (so its memory can be watched):
 * - a 50 MiB value crosses ~800 chunks, is written as it arrives, and the server's buffered upload
 *   bytes (and RSS) stay far below the value's size;
 * - large batches and large replies are chunked both ways;
 * - getAll streams batches with flow control, so a slow reader never has more than a window in flight;
 * - an upload that stops half way times out and leaves nothing visible.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Encoder, decode } from "cbor-x";
import { connect, createInbox, type Msg, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StrataClient } from "../../src/net/client/client.js";
import { DEFAULT_NET_LIMITS } from "../../src/net/wire/net-limits.js";
import { errorOfReply } from "../../src/net/wire/wire-errors.js";
import { startNatsServer, type RunningNatsServer } from "../../src/testing/nats-server.js";
import { startChildServer, type ChildServer } from "./server-child.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const MAX_PAYLOAD = 64 * KiB;
const UPLOAD_IDLE_MS = 500;
/** A 1 MiB upload window (16 chunks here): the server's buffering scales with it, not the value. */
const UPLOAD_WINDOW_BYTES = 1 * MiB;
const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

let nats: RunningNatsServer;
let dir: string;
let server: ChildServer;
let nc: NatsConnection;
let client: StrataClient;

beforeAll(async () => {
  nats = await startNatsServer({ maxPayload: MAX_PAYLOAD });
  dir = await mkdtemp(join(tmpdir(), "strata-large-"));
  server = await startChildServer({ dir, url: nats.url, id: "big", limits: { uploadIdleMs: UPLOAD_IDLE_MS, uploadWindowBytes: UPLOAD_WINDOW_BYTES } });
  nc = await connect({ servers: nats.url });
  expect(nc.info?.max_payload).toBe(MAX_PAYLOAD);
  client = new StrataClient(nc, { server: "big", timeoutMs: 20_000 });
});

afterAll(async () => {
  client?.close();
  await nc?.close();
  expect(await server?.stop()).toBe(0);
  await nats?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** Runs `work` while sampling the server's retained memory; the sampling is the observed event. */
async function sampleRetained<T>(start: number, work: () => Promise<T>): Promise<{ result: T; peakRetained: number; samples: number }> {
  let peakRetained = start;
  let samples = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      peakRetained = Math.max(peakRetained, (await server.stats()).retained);
      samples += 1;
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  try {
    return { result: await work(), peakRetained, samples };
  } finally {
    sampling = false;
    await sampler;
  }
}

describe("large values", () => {
  it("uploads a 50 MiB value chunk by chunk with bounded server memory, and reads it back", async () => {
    const value = randomBytes(50 * MiB);
    const s = client.stream("big/values");
    const before = await server.stats();
    const { result, peakRetained, samples } = await sampleRetained(before.retained, () => s.append({ value, headers: { name: "blob" } }));
    const { seq } = result;
    const after = await server.stats();
    // The server only ever holds the upload window (a few chunks), never the value: both its own
    // high-water mark of buffered upload bytes and what it retains (after GC) while the value
    // streams through stay far below the value's size.
    expect(after.stats.uploadBufferedHighWater).toBeGreaterThan(0);
    expect(after.stats.uploadBufferedHighWater).toBeLessThanOrEqual(UPLOAD_WINDOW_BYTES + MAX_PAYLOAD);
    expect(after.stats.uploadsOpen).toBe(0);
    expect(samples).toBeGreaterThanOrEqual(2);
    const growth = peakRetained - before.retained;
    expect(growth, `retained grew by ${growth} bytes over ${samples} samples`).toBeLessThan(value.byteLength / 3);

    const got = await s.get(seq);
    expect(got?.value.byteLength).toBe(value.byteLength);
    expect(sha(got!.value)).toBe(sha(value));
    expect(got?.headers).toEqual({ name: "blob" });
  });

  it("streams a large value from disk on get, with bounded server memory", async () => {
    const value = randomBytes(40 * MiB);
    const kv = client.kv("big/read");
    await kv.set("v", value);
    const before = await server.stats();
    const { result: got, peakRetained, samples } = await sampleRetained(before.retained, () => kv.get("v"));
    expect(sha(got!.value)).toBe(sha(value));
    expect(samples).toBeGreaterThanOrEqual(2);
    // The server reads the value chunk record by chunk record into the reply window.
    const growth = peakRetained - before.retained;
    expect(growth, `retained grew by ${growth} bytes over ${samples} samples`).toBeLessThan(value.byteLength / 3);
  });

  it("sets large kv values and stream seqs, and reports them as chunked changes", async () => {
    const kv = client.kv("big/kv");
    const value = randomBytes(3 * MiB + 17);
    const watch = kv.watch({ key: "k" });
    await kv.set("k", value);
    const change = (await watch.next()).value;
    watch.stop();
    expect(change).toMatchObject({ op: "set", key: "k", size: value.byteLength, chunked: true });
    expect(sha((await kv.get("k"))!.value)).toBe(sha(value));
    const s = client.stream("big/set");
    const v2 = randomBytes(200 * KiB);
    await s.set(7, { value: v2, timestamp: 99 });
    const m = await s.get(7);
    expect(m?.timestamp).toBe(99);
    expect(sha(m!.value)).toBe(sha(v2));
  });

  it("sends a batch larger than max_payload as one upload and gets its large result back", async () => {
    const s = client.stream("big/batch");
    const items = Array.from({ length: 3000 }, (_, i) => ({ message: { value: Buffer.alloc(40, i % 256) } }));
    const before = (await server.stats()).stats.requests;
    const results = await s.appendMany(items);
    expect(results).toHaveLength(3000);
    expect(results.every((r, i) => r.ok && r.result.seq === i + 1)).toBe(true);
    // One upload request plus its chunks; no per-item requests.
    const requests = (await server.stats()).stats.requests - before;
    expect(requests).toBeLessThan(10);
  });
});

describe("streamed getAll", () => {
  it("streams large and small messages in order with a bounded window for a slow reader", async () => {
    const s = client.stream("big/scan");
    const values: Buffer[] = [];
    for (let i = 0; i < 300; i++) values.push(i % 15 === 0 ? randomBytes(100 * KiB) : randomBytes(500));
    for (let i = 0; i < values.length; i += 100) await s.appendMany(values.slice(i, i + 100).map((value) => ({ message: { value } })));
    let n = 0;
    for await (const m of s.getAll()) {
      expect(m.seq).toBe(n + 1);
      expect(sha(m.value)).toBe(sha(values[n]!));
      n += 1;
      // A slow reader: the server must wait for credit rather than queue everything.
      if (n % 10 === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    }
    expect(n).toBe(300);
    const { stats } = await server.stats();
    expect(stats.replyInFlightHighWater).toBeLessThanOrEqual(DEFAULT_NET_LIMITS.replyWindowMessages);
  });

  it("streams values larger than a chunk record from disk, with bounded server memory", async () => {
    const s = client.stream("big/scan-large");
    const values = [randomBytes(10), randomBytes(30 * MiB), randomBytes(20)];
    for (const value of values) await s.append({ value });
    const kv = client.kv("big/scan-large-kv");
    const entry = randomBytes(5 * MiB + 3);
    await kv.set("a", randomBytes(7));
    await kv.set("b", entry);
    const before = await server.stats();
    const { result: got, peakRetained, samples } = await sampleRetained(before.retained, async () => {
      const out: Buffer[] = [];
      for await (const m of s.getAll()) out.push(Buffer.from(m.value));
      return out;
    });
    expect(got.map(sha)).toEqual(values.map(sha));
    const growth = peakRetained - before.retained;
    // Streamed, the server holds a reply window of chunks plus garbage not yet collected (5–7 MiB
    // typically, 11–12 MiB when a GC comes late); holding the value would be 30 MiB.
    expect(growth, `retained grew by ${growth} bytes over ${samples} samples`).toBeLessThan(values[1]!.byteLength / 2);
    const entries = [];
    for await (const e of kv.getAll()) entries.push(e);
    expect(entries.map((e) => e.key)).toEqual(["a", "b"]);
    expect(sha(entries[1]!.value)).toBe(sha(entry));
  });

  it("frees the server's stream when the reader stops early", async () => {
    const s = client.stream("big/scan");
    for await (const m of s.getAll()) if (m.seq === 3) break;
    // The cancel is a publish; a request after it on the same connection is handled after it.
    await s.inventory();
    expect((await server.stats()).stats.replyStreamsOpen).toBe(0);
  });
});

describe("incomplete uploads", () => {
  it("time out and leave nothing visible", async () => {
    const subject = "strata.w.big.big.partial";
    const inbox = createInbox();
    const replies: Msg[] = [];
    let wake: (() => void) | undefined;
    const sub = nc.subscribe(inbox, { callback: (_err, msg) => (replies.push(msg), wake?.()) });
    const next = async (): Promise<Msg> => {
      while (replies.length === 0) await new Promise<void>((resolve) => (wake = resolve));
      return replies.shift()!;
    };
    const head = cbor.encode({ op: "stream.append", message: {} });
    nc.publish(subject, cbor.encode({ op: "upload", head: head.byteLength, bytes: 1 * MiB }), { reply: inbox });
    const grant = decode((await next()).data) as { up: string; grant: number };
    expect(grant.grant).toBeGreaterThan(2);
    const data = new Uint8Array([...head, ...new Uint8Array(30 * KiB)]);
    nc.publish(subject, cbor.encode({ op: "chunk", upload: grant.up, k: 0, data }), { reply: inbox });
    nc.publish(subject, cbor.encode({ op: "chunk", upload: grant.up, k: 1, data: new Uint8Array(60 * KiB) }), { reply: inbox });
    // …and then silence. The server gives up after uploadIdleMs and says so.
    let reply = await next();
    while (!reply.headers) reply = await next(); // skip grants
    expect(errorOfReply(reply, () => subject)?.code).toBe("TIMEOUT");
    sub.unsubscribe();
    const inv = await client.stream("big/partial").inventory();
    expect(inv).toMatchObject({ count: 0, revision: 0 });
    expect(await client.stream("big/partial").get(1)).toBeUndefined();
    expect((await server.stats()).stats.uploadsOpen).toBe(0);
  });
});

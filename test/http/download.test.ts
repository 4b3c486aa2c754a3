/**
 * Large values downloaded through the gateway (src/http/download.ts over the client's
 * getStreamed), against a nats-server whose max_payload is 64 KiB and a strata server in a child
 * process, so that this process holds only the gateway, its client and the HTTP reader:
 * - an 8 MiB value (128 NATS messages, 16 reply windows) downloads byte for byte, from a kv and a stream;
 * - a paused download holds about one reply window in the gateway, not the 32 MiB value, and the
 *   server's reply stream stays open, waiting (it would have ended if the gateway read it whole);
 * - a reader that disconnects mid-download frees the server's reply stream and the gateway's slot;
 * - past httpDownloadsMax → 503 BUSY with Retry-After; HEAD and 304 read no value and hold nothing.
 * The server's replyIdleMs is a minute here: only a cancel can free a stream within these tests.
 */
import { createHash, randomBytes } from "node:crypto";
import { request, type ClientRequest, type IncomingMessage } from "node:http";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Gateway } from "../../src/http/gateway.js";
import type { StrataClient } from "../../src/net/client/client.js";
import type { ChildServer } from "../net/server-child.js";
import { loc, startChildGatewayStack, TOKENS, until, type ChildGatewayStack } from "./gateway-stack.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const MAX_PAYLOAD = 64 * KiB;
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

let stack: ChildGatewayStack;
let server: ChildServer;
let client: StrataClient;
let gateway: Gateway;

beforeAll(async () => {
  stack = await startChildGatewayStack({ id: "dl", maxPayload: MAX_PAYLOAD, client: { timeoutMs: 20_000 }, limits: { httpDownloadsMax: 2 } });
  ({ server, client, gateway } = stack);
  expect(stack.nc.info?.max_payload).toBe(MAX_PAYLOAD);
});

afterAll(async () => {
  await stack?.stop(async (s) => expect(await s.stop()).toBe(0));
});

/** A GET read by hand: `read(n)` reads until n bytes arrived, then pauses; `rest()` reads to the end. */
interface Download {
  req: ClientRequest;
  res: IncomingMessage;
  received: number;
  read(bytes: number): Promise<void>;
  rest(): Promise<string>;
}

async function download(path: string, init: { method?: string; headers?: Record<string, string> } = {}): Promise<Download> {
  const url = new URL(`${gateway.url}${path}`);
  const hash = createHash("sha256");
  let req!: ClientRequest;
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    req = request(url, { method: init.method ?? "GET", headers: { authorization: `Bearer ${TOKENS.admin}`, ...init.headers } }, resolve);
    req.on("error", reject);
    req.end();
  });
  res.pause();
  const d: Download = {
    req,
    res,
    received: 0,
    read: (bytes) =>
      new Promise<void>((resolve, reject) => {
        const onData = (chunk: Buffer) => {
          hash.update(chunk);
          d.received += chunk.byteLength;
          if (d.received >= bytes) done();
        };
        const done = () => {
          res.pause();
          res.off("data", onData).off("end", done).off("error", reject);
          resolve();
        };
        res.on("data", onData).once("end", done).once("error", reject);
        res.resume();
      }),
    rest: async () => {
      await d.read(Number.MAX_SAFE_INTEGER);
      return hash.digest("hex");
    },
  };
  return d;
}

async function serverStreamsOpen(): Promise<number> {
  return (await server.stats()).stats.replyStreamsOpen;
}

/** ArrayBuffer bytes this process holds (the gateway, its client, the HTTP reader) after full GCs. */
async function heldBuffers(): Promise<number> {
  gc();
  await new Promise((resolve) => setImmediate(resolve));
  gc();
  return process.memoryUsage().arrayBuffers;
}

const released = () => until(async () => gateway.stats().downloadsOpen === 0 && (await serverStreamsOpen()) === 0, "the download's slot and the server's reply stream to be released", 5_000);

describe("downloads of large values", () => {
  it("an 8 MiB value (128 NATS messages) downloads byte for byte from a kv and a stream, with its Content-Length", async () => {
    const big = randomBytes(8 * MiB + 13);
    const mid = randomBytes(300 * KiB); // larger than a message, held in memory by the server
    const tiny = randomBytes(10); // one message, sent whole
    await client.kv("acct/dl/kv").set("big", big);
    await client.kv("acct/dl/kv").set("mid", mid);
    await client.kv("acct/dl/kv").set("tiny", tiny);
    const { seq } = await client.stream("acct/dl/s").append({ value: big });
    for (const [path, value] of [
      [`/kv/${loc("acct/dl/kv")}/big`, big],
      [`/kv/${loc("acct/dl/kv")}/mid`, mid],
      [`/kv/${loc("acct/dl/kv")}/tiny`, tiny],
      [`/streams/${loc("acct/dl/s")}/${seq}`, big],
    ] as const) {
      const r = await fetch(`${gateway.url}${path}`, { headers: { authorization: `Bearer ${TOKENS.admin}` } });
      expect(r.status).toBe(200);
      expect(r.headers.get("content-length")).toBe(String(value.byteLength));
      const body = new Uint8Array(await r.arrayBuffer());
      expect(body.byteLength).toBe(value.byteLength);
      expect(sha(body)).toBe(sha(value));
    }
    const missing = await fetch(`${gateway.url}/kv/${loc("acct/dl/kv")}/missing`, { headers: { authorization: `Bearer ${TOKENS.admin}` } });
    expect(missing.status).toBe(404);
    await released();
  });

  it("a paused download holds about one reply window in the gateway, not the value, and the server waits for it", async () => {
    const value = randomBytes(32 * MiB);
    await client.kv("acct/dl/slow").set("v", value);
    const before = await heldBuffers();
    const d = await download(`/kv/${loc("acct/dl/slow")}/v`);
    expect(d.res.headers["content-length"]).toBe(String(value.byteLength));
    await d.read(256 * KiB);
    // The reader has 256 KiB of 32 MiB: the server's reply stream must still be sending (a gateway
    // that read the value whole would have consumed it all before answering).
    expect(await serverStreamsOpen()).toBe(1);
    expect(gateway.stats().downloadsOpen).toBe(1);
    // While the reader pauses, the socket fills and the gateway stops pulling; sample what it holds.
    let peak = 0;
    for (let i = 0; i < 15; i++) {
      peak = Math.max(peak, (await heldBuffers()) - before);
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(await serverStreamsOpen()).toBe(1);
    // About a reply window (8 × 64 KiB) plus the chunk in the socket's buffer: 0.5–0.9 MiB measured;
    // a gateway that read the value whole held 64 MiB (the value, and its copy being written).
    expect(peak, `held ${peak} bytes more while paused`).toBeLessThan(value.byteLength / 8);
    expect(await d.rest()).toBe(sha(value));
    expect(d.received).toBe(value.byteLength);
    await released();
  });

  it("a reader that disconnects mid-download frees the server's reply stream and the gateway's slot", async () => {
    // Larger than what the sockets' kernel buffers can absorb while the reader pauses (a few MiB).
    const value = randomBytes(16 * MiB);
    const { seq } = await client.stream("acct/dl/gone").append({ value });
    const d = await download(`/streams/${loc("acct/dl/gone")}/${seq}`);
    await d.read(64 * KiB);
    expect(await serverStreamsOpen()).toBe(1);
    d.req.destroy();
    await released();
    expect((await server.stats()).stats.replyStreamsEvicted).toBe(0);
  });

  it("past httpDownloadsMax answers 503 BUSY with Retry-After; small values, HEAD and 304 hold no slot", async () => {
    const value = randomBytes(16 * MiB);
    const kv = client.kv("acct/dl/busy");
    const { revision } = await kv.set("v", value);
    await kv.set("small", randomBytes(100));
    const path = `/kv/${loc("acct/dl/busy")}/v`;
    const first = await download(path);
    const second = await download(path);
    expect(gateway.stats().downloadsOpen).toBe(2);
    const third = await fetch(`${gateway.url}${path}`, { headers: { authorization: `Bearer ${TOKENS.admin}` } });
    expect(third.status).toBe(503);
    expect(third.headers.get("retry-after")).toBe("1");
    expect(((await third.json()) as { code: string }).code).toBe("BUSY");
    const small = await fetch(`${gateway.url}/kv/${loc("acct/dl/busy")}/small`, { headers: { authorization: `Bearer ${TOKENS.admin}` } });
    expect(small.status).toBe(200);
    expect((await small.arrayBuffer()).byteLength).toBe(100);
    await until(async () => (await serverStreamsOpen()) === 2, "the refused download's reply stream to be cancelled", 5_000);
    first.req.destroy();
    expect(await second.rest()).toBe(sha(value));
    await released();

    const head = await download(path, { method: "HEAD" });
    expect(head.res.statusCode).toBe(200);
    expect(head.res.headers["content-length"]).toBe(String(value.byteLength));
    await head.rest();
    expect(head.received).toBe(0);
    const cached = await download(path, { headers: { "if-none-match": `"${revision}"` } });
    expect(cached.res.statusCode).toBe(304);
    await cached.rest();
    await released();
  });
});

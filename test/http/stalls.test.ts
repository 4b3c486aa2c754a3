/**
 * HTTP readers that stop reading but stay connected, and a server that dies mid-download, against
 * a nats-server with a 64 KiB max_payload and a strata server in a child process (so it can be
 * killed by PID):
 * - a download, an NDJSON listing and an SSE watch whose reader takes nothing for httpWriteStallMs
 *   are cut, giving back their slots and the server's reply stream (without the cut a stalled but
 *   connected reader held its slot for good: 32 of them took every download slot);
 * - a server killed while a large value streams: the HTTP client sees fewer bytes than
 *   Content-Length (a broken transfer), never a complete-looking short body.
 * Values are larger than the sockets' kernel buffers, so a paused reader really stalls the gateway.
 */
import { randomBytes } from "node:crypto";
import { request, type ClientRequest, type IncomingMessage } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TokenTable } from "../../src/http/auth.js";
import { startGateway, type Gateway } from "../../src/http/gateway.js";
import type { StrataClient } from "../../src/net/client/client.js";
import { captureLogger } from "../helpers/capture-logger.js";
import type { ChildServer } from "../net/server-child.js";
import { loc, startChildGatewayStack, TOKEN_DOC, TOKENS, until, type ChildGatewayStack } from "./gateway-stack.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const STALL_MS = 400;

let stack: ChildGatewayStack;
let server: ChildServer;
let client: StrataClient;
let gateway: Gateway;

beforeAll(async () => {
  stack = await startChildGatewayStack({
    id: "st",
    maxPayload: 64 * KiB,
    client: { timeoutMs: 3000, limits: { attemptTimeoutMs: 1000 } },
    limits: { httpWriteStallMs: STALL_MS, httpSseKeepaliveMs: 100 },
  });
  ({ server, client, gateway } = stack);
});

afterAll(async () => {
  await stack?.stop((s) => s.kill());
});

/** A GET read by hand: reads `first` bytes, then stops reading (the socket stays open). */
async function pausedGet(gw: Gateway, path: string, first: number): Promise<{ req: ClientRequest; res: IncomingMessage; received: () => number; closed: Promise<void>; resume(): void }> {
  let req!: ClientRequest;
  const res = await new Promise<IncomingMessage>((resolve, reject) => {
    req = request(new URL(`${gw.url}${path}`), { headers: { authorization: `Bearer ${TOKENS.admin}` } }, resolve);
    req.on("error", reject);
    req.end();
  });
  let received = 0;
  const closed = new Promise<void>((resolve) => res.once("close", () => resolve()));
  res.on("error", () => {}); // a cut connection is what some tests wait for
  await new Promise<void>((resolve) => {
    const onData = (chunk: Buffer) => {
      received += chunk.byteLength;
      if (received < first) return;
      res.pause();
      res.off("data", onData);
      resolve();
    };
    res.on("data", onData);
  });
  return { req, res, received: () => received, closed, resume: () => res.on("data", (c: Buffer) => (received += c.byteLength)).resume() };
}

async function serverStreamsOpen(): Promise<number> {
  return (await server.stats()).stats.replyStreamsOpen;
}

describe("stalled readers", () => {
  it("a download whose reader stops reading is cut after httpWriteStallMs: its slot and the server's reply stream come back", async () => {
    const value = randomBytes(16 * MiB);
    await client.kv("acct/st/kv").set("big", value);
    const d = await pausedGet(gateway, `/kv/${loc("acct/st/kv")}/big`, 64 * KiB);
    expect(gateway.stats().downloadsOpen).toBe(1);
    await until(() => gateway.stats().downloadsOpen === 0, "the download slot to come back", 5000);
    // A paused socket does not see its end: once it reads again, the transfer is broken, not complete.
    d.resume();
    await d.closed;
    expect(d.res.complete).toBe(false);
    expect(d.received()).toBeLessThan(value.byteLength);
    let open = 1;
    const end = Date.now() + 5000;
    while ((open = await serverStreamsOpen()) > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 20));
    expect(open).toBe(0);
  });

  it("an NDJSON listing and an SSE watch whose readers stop reading are cut, and give back their slots", async () => {
    const s = client.stream("acct/st/s");
    const value = randomBytes(48 * KiB);
    for (let i = 0; i < 25; i++) await Promise.all(Array.from({ length: 8 }, () => s.append({ value }))); // ~13 MiB as base64
    const listing = await pausedGet(gateway, `/streams/${loc("acct/st/s")}`, 64 * KiB);
    const watch = await pausedGet(gateway, `/streams/${loc("acct/st/s")}/watch`, 64 * KiB);
    expect(gateway.stats().streamsOpen).toBe(2);
    await until(() => gateway.stats().streamsOpen === 0, "the stream slots to come back", 5000);
    listing.resume();
    watch.resume();
    await listing.closed;
    await watch.closed;
    expect(listing.res.complete).toBe(false);
    expect(watch.res.complete).toBe(false);
  });

  it("a quiet SSE watch whose reader keeps up is not cut: its keepalives move bytes", async () => {
    const before = gateway.stats().streamsOpen;
    const r = await fetch(`${gateway.url}/streams/${loc("acct/st/quiet")}/watch`, { headers: { authorization: `Bearer ${TOKENS.admin}` } });
    const reader = r.body!.pipeThrough(new TextDecoderStream()).getReader();
    let keepalives = 0;
    // Quiet for more than 3 × httpWriteStallMs: only keepalives flow, and the watch stays open.
    while (keepalives < Math.ceil((3 * STALL_MS) / 100) + 2) keepalives += ((await reader.read()).value ?? "").split(": keepalive").length - 1;
    expect(gateway.stats().streamsOpen).toBe(before + 1);
    await reader.cancel();
    await until(() => gateway.stats().streamsOpen === before, "the watch's slot to come back");
  });
});

describe("a server that dies mid-download", () => {
  it("cuts the connection: the HTTP client gets fewer bytes than Content-Length and the gateway logs it", async () => {
    const cap = captureLogger();
    // The default stall limit (a minute): the cut must come from the failed read, not a stall.
    const gw = await startGateway({ client, port: 0, tokens: TokenTable.from(TOKEN_DOC), logger: cap.logger });
    try {
      const value = randomBytes(16 * MiB);
      const { seq } = await client.stream("acct/st/dies").append({ value });
      const d = await pausedGet(gw, `/streams/${loc("acct/st/dies")}/${seq}`, 64 * KiB);
      expect(d.res.headers["content-length"]).toBe(String(value.byteLength));
      await server.kill();
      d.resume();
      await d.closed;
      expect(d.res.complete).toBe(false);
      expect(d.received()).toBeLessThan(value.byteLength);
      expect((await cap.waitFor("http_download_failed")).what).toMatch(/acct\/st\/dies/);
      await until(() => gw.stats().downloadsOpen === 0, "the download slot to come back");
    } finally {
      await gw.close();
    }
  });
});

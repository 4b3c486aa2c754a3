/**
 * The gateway against hostile and unlucky HTTP clients, over raw sockets where fetch would tidy the
 * request up: HEAD on streamed routes gives back what the GET route opened; slow senders are cut
 * after httpRequestReceiveMs (not up to 30 s later) and senders that vanish mid-body free their
 * reservation without an internal error; connections past httpConnectionsMax are closed; and, pinned: percent-encoded path tricks, grants a crafted
 * location cannot escape, duplicate or odd Authorization headers, unknown methods, bad Last-Event-ID,
 * and a body shorter than its Content-Length (nothing written).
 */
import { connect as netConnect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TokenTable } from "../../src/http/auth.js";
import { startGateway, type Gateway } from "../../src/http/gateway.js";
import { captureLogger } from "../helpers/capture-logger.js";
import { StrataClient } from "../../src/net/client/client.js";
import { startStack, type Stack } from "../helpers/strata-stack.js";
import { loc, TOKEN_DOC, TOKENS, until } from "./gateway-stack.js";

const RECEIVE_MS = 600;
const BUFFER = 64 * 1024;

let stack: Stack;
let client: StrataClient;
let gw: Gateway;
const cap = captureLogger();
beforeAll(async () => {
  // The protocol has no cancel: an upload whose HTTP sender vanished waits out the server's
  // uploadIdleMs, and the server's stop waits for it. Short here, so the file stays fast.
  stack = await startStack({ id: "s1", server: { limits: { uploadIdleMs: 300 } } });
  client = new StrataClient(stack.nc, { server: "s1", timeoutMs: 5000 });
  gw = await startGateway({
    client,
    port: 0,
    tokens: TokenTable.from(TOKEN_DOC),
    logger: cap.logger,
    limits: { httpRequestReceiveMs: RECEIVE_MS, httpBodyBytesMax: 1024 * 1024, httpBodyBufferBytesMax: BUFFER, httpBodyInflightBytesMax: 2 * 1024 * 1024 },
  });
});
afterAll(async () => {
  await gw?.close();
  client?.close();
  await stack?.stop();
});

interface Raw {
  write(text: string): void;
  /** Everything received so far (latin1). */
  data(): string;
  /** Resolves once the gateway closed the connection (or it was destroyed here), with the ms it took. */
  closed: Promise<number>;
  destroy(): void;
}

/** A raw connection to the gateway that sends `text` first. */
function raw(text: string): Promise<Raw> {
  const u = new URL(gw.url);
  const started = Date.now();
  return new Promise((resolve, reject) => {
    let buf = "";
    const sock = netConnect(Number(u.port), u.hostname, () => {
      sock.write(text);
      resolve({ write: (t) => sock.write(t), data: () => buf, closed, destroy: () => sock.destroy() });
    });
    const closed = new Promise<number>((r) => sock.on("close", () => r(Date.now() - started)));
    sock.on("data", (d) => (buf += d.toString("latin1")));
    sock.on("error", reject);
  });
}

/** One request on its own connection (Connection: close); resolves with the status line and body. */
async function once(head: string): Promise<{ status: number; body: string }> {
  const c = await raw(`${head}Host: x\r\nConnection: close\r\n\r\n`);
  await c.closed;
  const text = c.data();
  return { status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), body: text.slice(text.indexOf("\r\n\r\n") + 4) };
}

const AUTH = `Authorization: Bearer ${TOKENS.admin}\r\n`;
const get = (path: string, token: string = TOKENS.admin, init: RequestInit = {}) => fetch(`${gw.url}${path}`, { ...init, headers: { authorization: `Bearer ${token}`, ...(init.headers as Record<string, string>) } });
const internalErrors = () => cap.all("http_internal_error").length;

describe("HEAD on streamed routes", () => {
  it("answers the GET route's status and headers, and gives back the slot and the watch or reply stream it opened", async () => {
    await get(`/streams/${loc("acct/h/s")}`, TOKENS.admin, { method: "POST", body: "m" });
    await get(`/kv/${loc("acct/h/k")}/a`, TOKENS.admin, { method: "PUT", body: "v" });
    for (const [path, type] of [
      [`/streams/${loc("acct/h/s")}/watch`, "text/event-stream"],
      [`/streams/${loc("acct/h/s")}`, "application/x-ndjson"],
      [`/kv/${loc("acct/h/k")}`, "application/json"],
    ] as const) {
      const r = await get(path, TOKENS.admin, { method: "HEAD" });
      expect(r.status, path).toBe(200);
      expect(r.headers.get("content-type"), path).toBe(type);
      expect(await r.text()).toBe("");
      expect(gw.stats().streamsOpen, path).toBe(0);
    }
    // Errors of the GET route keep their status.
    expect((await get(`/streams/${loc("acct/h/k")}`, TOKENS.admin, { method: "HEAD" })).status).toBe(409);
    expect(gw.stats().streamsOpen).toBe(0);
  });
});

describe("request bodies from slow or vanishing senders", () => {
  it("a sender slower than httpRequestReceiveMs is answered 408 and cut within about that time; its reservation comes back and nothing is written", async () => {
    const errorsBefore = internalErrors();
    const c = await raw(`PUT /kv/${loc("acct/h/slow")}/k HTTP/1.1\r\nHost: x\r\n${AUTH}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n`);
    await until(() => gw.stats().bodyInflightBytes > 0, "the body's reservation");
    const drip = setInterval(() => c.write("1\r\nx\r\n"), 50); // the slow sender, not a synchronisation
    try {
      const ms = await Promise.race([c.closed, new Promise<number>((r) => setTimeout(() => r(-1), 4 * RECEIVE_MS + 1000))]);
      expect(ms, "the connection was cut").toBeGreaterThan(0);
      expect(ms).toBeLessThan(2 * RECEIVE_MS + 500);
    } finally {
      clearInterval(drip);
      c.destroy();
    }
    expect(c.data()).toMatch(/^HTTP\/1\.1 408/);
    await until(() => gw.stats().bodyInflightBytes === 0, "the reservation to come back");
    expect((await get(`/kv/${loc("acct/h/slow")}/k`)).status).toBe(404);
    expect(internalErrors()).toBe(errorsBefore);
  });

  it("a sender that goes away mid-body (chunked, held, streamed) frees its reservation, writes nothing and is not an internal error", async () => {
    const errorsBefore = internalErrors();
    const heads = [
      `Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n`,
      `Content-Length: 1000\r\n\r\nabc`,
      `Content-Length: ${4 * BUFFER}\r\n\r\n${"x".repeat(BUFFER)}`,
    ];
    for (const [i, rest] of heads.entries()) {
      const c = await raw(`PUT /kv/${loc("acct/h/gone")}/k${i} HTTP/1.1\r\nHost: x\r\n${AUTH}${rest}`);
      await until(() => gw.stats().bodyInflightBytes > 0, "the body's reservation");
      c.destroy();
      await until(() => gw.stats().bodyInflightBytes === 0, "the reservation to come back");
      expect((await get(`/kv/${loc("acct/h/gone")}/k${i}`)).status, rest.slice(0, 30)).toBe(404);
    }
    expect(internalErrors()).toBe(errorsBefore);
  });
});

describe("connections", () => {
  it("past httpConnectionsMax a new connection is closed at once, and once one ends another is served", async () => {
    const small = await startGateway({ client, port: 0, tokens: TokenTable.from(TOKEN_DOC), limits: { httpConnectionsMax: 3, httpStreamsMax: 1, httpDownloadsMax: 1 } });
    const u = new URL(small.url);
    const open = (): Promise<{ closed: Promise<void>; destroy(): void }> =>
      new Promise((resolve, reject) => {
        const sock = netConnect(Number(u.port), u.hostname, () => resolve({ closed, destroy: () => sock.destroy() }));
        const closed = new Promise<void>((r) => sock.on("close", () => r()));
        sock.on("error", () => {});
        sock.once("error", reject);
      });
    try {
      const idle = [await open(), await open(), await open()];
      const refused = await open();
      let cut = false;
      await Promise.race([refused.closed.then(() => (cut = true)), new Promise((r) => setTimeout(r, 3000))]);
      expect(cut, "the connection past the limit was closed").toBe(true);
      idle[0]!.destroy();
      await idle[0]!.closed;
      let served: Response | undefined;
      for (let i = 0; i < 50 && served === undefined; i++) {
        // The server learns of the closed socket asynchronously; retry until it has.
        served = await fetch(`${small.url}/healthz`).catch(() => undefined);
        if (served === undefined) await new Promise((r) => setTimeout(r, 20));
      }
      expect(served?.status).toBe(200);
      for (const s of idle) s.destroy();
    } finally {
      await small.close();
    }
    await expect(startGateway({ client, port: 0, tokens: TokenTable.from(TOKEN_DOC), limits: { httpConnectionsMax: 10, httpStreamsMax: 10 } })).rejects.toThrow(/httpConnectionsMax must be >= httpStreamsMax \+ httpDownloadsMax/);
  });
});

describe("hostile requests (pinned)", () => {
  it("percent-encoded tricks in locations and keys are 4xx, and never reach another location", async () => {
    const cases: Array<[string, number, string?]> = [
      [`/kv/${loc("acct/h/k")}/%00`, 400, "INVALID_KEY"],
      [`/kv/${loc("acct/h/k")}/%C0%AE`, 400, "INVALID_KEY"], // overlong "." is not decoded
      [`/kv/${loc("acct/h/k")}/%E0%A4%A`, 400, "INVALID_KEY"], // truncated UTF-8
      [`/kv/acct%2Fh%2F..%2Fk/a`, 400, "INVALID_LOCATION"],
      [`/kv/acct%252Fh%252Fk/a`, 400, "INVALID_LOCATION"], // decoded once, not twice
      [`/kv/%/a`, 400, "INVALID_LOCATION"],
      [`/kv/${loc("acct/h/k")}/${"a".repeat(2000)}`, 400, "INVALID_KEY"],
      [`/kv/${"a".repeat(20_000)}/k`, 431],
      [`/streams/${loc("acct/h/s")}/1e3`, 400, "INVALID_ARGUMENT"],
      [`/streams/${loc("acct/h/s")}/-1`, 400, "INVALID_ARGUMENT"],
      [`/streams/${loc("acct/h/s")}/99999999999999999999`, 400, "INVALID_ARGUMENT"],
    ];
    for (const [path, status, code] of cases) {
      const r = await get(path);
      expect(r.status, path.slice(0, 60)).toBe(status);
      if (code !== undefined) expect(((await r.json()) as { code: string }).code, path.slice(0, 60)).toBe(code);
    }
    // alice may write acct/alice and below; crafted segments do not escape the grant.
    for (const path of [`/kv/acct%2Falice%252F..%252Fbob/a`, `/kv/acct%252Falice%2Fbob/a`, `/kv/acct%2Falicex/a`, `/kv/acct%2Fbob%2F..%2Falice/a`, `/kv/%2Facct%2Falice/a`]) {
      const r = await get(path, TOKENS.alice, { method: "PUT", body: "x" });
      expect(r.status, path).toBe(403);
    }
    expect((await get(`/kv/${loc("acct/alice/h")}/a`, TOKENS.alice, { method: "PUT", body: "x" })).status).toBe(200);
  });

  it("duplicate or odd Authorization headers are 401; unknown methods 400 or 405; a bad Last-Event-ID 400", async () => {
    const path = `/kv/${loc("acct/h/k")}/a`;
    await client.kv("acct/h/k").set("a", new Uint8Array([1]));
    for (const auth of [AUTH + AUTH, `${AUTH}Authorization: Bearer unknown-token-0123456789\r\n`, `Authorization: Bearer unknown-token-0123456789\r\n${AUTH}`, "Authorization: Basic eDp5\r\n", "Authorization: Bearer\r\n", "Authorization: Bearer a b\r\n"]) {
      const r = await once(`GET ${path} HTTP/1.1\r\n${auth}`);
      expect(r.status, auth).toBe(401);
      expect(JSON.parse(r.body)).toMatchObject({ code: "UNAUTHORIZED" });
    }
    expect((await once(`GET ${path} HTTP/1.1\r\nAuthorization:   bearer   ${TOKENS.admin}  \r\n`)).status).toBe(200);
    expect((await once(`FOO ${path} HTTP/1.1\r\n${AUTH}`)).status).toBe(400);
    for (const m of ["OPTIONS", "PATCH", "TRACE"]) expect((await once(`${m} ${path} HTTP/1.1\r\n${AUTH}`)).status, m).toBe(405);
    const open = gw.stats().streamsOpen;
    for (const id of ["abc", "0", "-1", "1".repeat(5000)]) {
      const r = await get(`/streams/${loc("acct/h/s")}/watch`, TOKENS.admin, { headers: { "last-event-id": id } });
      expect(r.status, id.slice(0, 20)).toBe(400);
      expect(gw.stats().streamsOpen).toBe(open);
    }
  });

  it("a streamed body shorter than its Content-Length writes nothing", async () => {
    const c = await raw(`POST /streams/${loc("acct/h/short")} HTTP/1.1\r\nHost: x\r\n${AUTH}Content-Length: ${4 * BUFFER}\r\n\r\n${"y".repeat(2 * BUFFER)}`);
    await until(() => gw.stats().bodyInflightBytes > 0, "the body's reservation");
    c.destroy();
    await until(() => gw.stats().bodyInflightBytes === 0, "the reservation to come back");
    const list = await get(`/streams/${loc("acct/h/short")}`);
    expect(list.status).toBe(200);
    expect(await list.text()).toBe("");
  });
});

/**
 * How the gateway fails, through real HTTP against a real deployment: StrataError codes as HTTP
 * statuses with `{ code, message }` (503 with Retry-After when the server is unreachable, 504 when
 * it does not answer in time), bodies past httpBodyBytesMax refused with 413 before they are sent,
 * hostile input (bad locations, unknown routes, malformed encodings, oversized heads) as 4xx and
 * never a crash, SSE keepalives, the OpenAPI document covering every route the app serves, and one
 * round trip with curl.
 */
import { execFile } from "node:child_process";
import { request } from "node:http";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ERROR_CODES, StrataError } from "../../src/errors.js";
import { createGatewayApp } from "../../src/http/app.js";
import { TokenTable } from "../../src/http/auth.js";
import { startGateway } from "../../src/http/gateway.js";
import { errorAnswer, HttpError, STATUS_OF_CODE } from "../../src/http/http-errors.js";
import { resolveHttpLimits } from "../../src/http/http-limits.js";
import { openApiDocument } from "../../src/http/openapi.js";
import { silentLogger } from "../../src/logger.js";
import { StrataClient } from "../../src/net/client/client.js";
import { loc, startGatewayStack, TOKEN_DOC, TOKENS, type GatewayStack } from "./gateway-stack.js";

const run = promisify(execFile);

let g: GatewayStack;
beforeAll(async () => {
  g = await startGatewayStack({ limits: { httpBodyBytesMax: 1024 * 1024, httpBodyBufferBytesMax: 64 * 1024, httpBodyInflightBytesMax: 4 * 1024 * 1024 } });
});
afterAll(async () => {
  await g?.stop();
});

const auth = { authorization: `Bearer ${TOKENS.admin}` };

describe("error mapping", () => {
  it("maps every StrataError code to its status with { code, message }; 503 carries Retry-After; CONFLICT with a precondition is 412", () => {
    for (const code of ERROR_CODES) {
      const a = errorAnswer(new StrataError(code, `m-${code}`), { retryAfterSeconds: 2, onInternal: () => {} });
      expect(a.status, code).toBe(STATUS_OF_CODE[code]);
      expect(a.body).toEqual({ code, message: `m-${code}` });
      expect(a.headers["retry-after"], code).toBe(a.status === 503 ? "2" : undefined);
    }
    expect(errorAnswer(new StrataError("INVALID_LOCATION", "x"), { retryAfterSeconds: 1 }).status).toBe(400);
    expect(errorAnswer(new StrataError("CONFLICT", "x"), { retryAfterSeconds: 1 }).status).toBe(409);
    expect(errorAnswer(new StrataError("CONFLICT", "x"), { retryAfterSeconds: 1, precondition: true }).status).toBe(412);
    expect(errorAnswer(new HttpError(503, "BUSY", "x"), { retryAfterSeconds: 3 }).headers["retry-after"]).toBe("3");
    const internal: unknown[] = [];
    const bug = errorAnswer(new TypeError("secret detail"), { retryAfterSeconds: 1, onInternal: (e) => internal.push(e) });
    expect(bug.status).toBe(500);
    expect(bug.body.code).toBe("INTERNAL");
    expect(bug.body.message).not.toMatch(/secret/);
    expect(internal).toHaveLength(1);
  });

  it("answers 409 WRONG_KIND, 400 INVALID_LOCATION and 404 for unknown routes through HTTP", async () => {
    await g.call(`/streams/${loc("acct/x/s")}`, { method: "POST", body: "m" });
    const wrong = await g.call(`/kv/${loc("acct/x/s")}/k`, { method: "PUT", body: "v" });
    expect(wrong.status).toBe(409);
    expect(((await wrong.json()) as { code: string }).code).toBe("WRONG_KIND");
    for (const bad of ["acct//x", "acct/x y", "a.b", "x".repeat(5000), "%E0%A4%A", "acct%2F..%2Fx"]) {
      const r = await g.call(`/kv/${bad.startsWith("%") || bad.includes("%2F") ? bad : loc(bad)}/k`);
      expect([400, 404], bad.slice(0, 30)).toContain(r.status);
      const body = (await r.json()) as { code: string };
      expect(["INVALID_LOCATION", "NOT_FOUND"]).toContain(body.code);
    }
    expect((await g.call(`/kv/${loc("acct//x")}/k`)).status).toBe(400);
    for (const p of ["/", "/nope", `/kv`, `/streams/${loc("a/b")}/1/2`, `/kv/${loc("a/b")}/k/extra`]) {
      const r = await g.call(p);
      expect(r.status, p).toBe(404);
      expect(((await r.json()) as { code: string }).code).toBe("NOT_FOUND");
    }
    // A route that exists with another method: 405 with Allow, and nothing reaches the deployment.
    for (const [method, p, allow] of [
      ["POST", `/kv/${loc("a/b")}/k`, "GET, HEAD, PUT, DELETE"],
      ["PUT", `/streams/${loc("a/b")}`, "GET, HEAD, POST, DELETE"],
      ["POST", `/streams/${loc("a/b")}/watch`, "GET, HEAD"],
      ["PATCH", `/streams/${loc("a/b")}/3`, "GET, HEAD, DELETE"],
      ["POST", "/healthz", "GET, HEAD"],
    ] as const) {
      const r = await g.call(p, { method, body: "x" });
      expect(r.status, `${method} ${p}`).toBe(405);
      expect(r.headers.get("allow")).toBe(allow);
      expect(((await r.json()) as { code: string }).code).toBe("METHOD_NOT_ALLOWED");
    }
    expect((await g.client.stream("a/b").inventory()).count).toBe(0);
  });

  it("answers 503 with Retry-After when no server answers for the location, and 504 when the server does not answer in time", async () => {
    const gone = new StrataClient(g.stack.nc, { server: "gone", timeoutMs: 500 });
    const silentSub = g.stack.nc.subscribe("strata.*.silent.>", { callback: () => {} }); // receives, never answers
    await g.stack.nc.flush();
    const silent = new StrataClient(g.stack.nc, { server: "silent", timeoutMs: 500 });
    const tokens = TokenTable.from(TOKEN_DOC);
    const gws = [await startGateway({ client: gone, port: 0, tokens }), await startGateway({ client: silent, port: 0, tokens })];
    try {
      const a = await fetch(`${gws[0]!.url}/kv/${loc("acct/x/k")}/k`, { method: "PUT", body: "v", headers: auth });
      expect(a.status).toBe(503);
      expect(a.headers.get("retry-after")).toBe("1");
      expect(((await a.json()) as { code: string }).code).toBe("UNAVAILABLE");
      const b = await fetch(`${gws[1]!.url}/kv/${loc("acct/x/k")}/k`, { method: "PUT", body: "v", headers: auth });
      expect(b.status).toBe(504);
      expect(((await b.json()) as { code: string }).code).toBe("TIMEOUT");
    } finally {
      for (const gw of gws) await gw.close();
      silentSub.unsubscribe();
      gone.close();
      silent.close();
    }
  });
});

describe("bounded requests", () => {
  it("refuses a body whose Content-Length passes httpBodyBytesMax with 413 before any of it is sent", async () => {
    const r = await new Promise<{ status: number; body: string; connection?: string }>((resolve, reject) => {
      const req = request(`${g.gateway.url}/streams/${loc("acct/x/big")}`, { method: "POST", headers: { ...auth, "content-length": String(512 * 1024 * 1024) } }, (res) => {
        let body = "";
        res.setEncoding("utf8").on("data", (d: string) => (body += d));
        res.on("end", () => resolve({ status: res.statusCode!, body, connection: res.headers.connection }));
      });
      req.on("error", reject);
      req.flushHeaders(); // the head only: the answer must come without a byte of the body
    });
    expect(r.status).toBe(413);
    expect(JSON.parse(r.body)).toMatchObject({ code: "TOO_LARGE" });
    expect(r.connection).toBe("close");
    expect(g.stack.store.inventory("acct/x/big").revision).toBe(0);
  });

  it("refuses a chunked body with 413 as soon as it passes the limit, and holds nothing after", async () => {
    let sent = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent >= 8 * 1024 * 1024) return controller.close();
        sent += 64 * 1024;
        controller.enqueue(new Uint8Array(64 * 1024));
      },
    });
    const r = await g.call(`/kv/${loc("acct/x/chunked")}/k`, { method: "PUT", body, duplex: "half" } as RequestInit);
    expect(r.status).toBe(413);
    expect(((await r.json()) as { code: string }).code).toBe("TOO_LARGE");
    expect(g.gateway.stats().bodyInflightBytes).toBe(0);
    expect(g.stack.store.inventory("acct/x/chunked").revision).toBe(0);
  });

  it("answers 431 to a head past httpHeaderBytesMax and keeps serving", async () => {
    const r = await g.call(`/kv/${loc("acct/x/h")}/k`, { headers: { "x-junk": "j".repeat(64 * 1024) } });
    expect(r.status).toBe(431);
    expect((await g.call("/healthz")).status).toBe(200);
  });

  it("refuses inconsistent gateway limits at start", () => {
    expect(() => resolveHttpLimits({ httpBodyBufferBytesMax: 10, httpBodyBytesMax: 5 })).toThrow(/httpBodyBufferBytesMax must be <= httpBodyBytesMax/);
    expect(() => resolveHttpLimits({ httpBodyInflightBytesMax: 1 })).toThrow(/httpBodyInflightBytesMax must be >= httpBodyBytesMax/);
    expect(() => resolveHttpLimits({ httpStreamsMax: 0 })).toThrow(/positive integer/);
    expect(() => resolveHttpLimits({ nope: 1 } as never)).toThrow(/unknown gateway limit/);
  });

  it("refuses streamed responses past httpStreamsMax with 503, sends SSE keepalives on a quiet watch, and ends watches on close", async () => {
    // A grace far past the test's timeout: close() must end the watch itself, not wait it out.
    const gw = await startGateway({ client: g.client, port: 0, tokens: TokenTable.from(TOKEN_DOC), limits: { httpStreamsMax: 1, httpSseKeepaliveMs: 50, httpShutdownGraceMs: 600_000 } });
    let closed = false;
    try {
      const watch = await fetch(`${gw.url}/streams/${loc("acct/x/quiet")}/watch`, { headers: auth });
      const reader = watch.body!.pipeThrough(new TextDecoderStream()).getReader();
      let text = "";
      while (!text.includes(": keepalive")) text += (await reader.read()).value ?? "";
      const busy = await fetch(`${gw.url}/streams/${loc("acct/x/quiet")}`, { headers: auth });
      expect(busy.status).toBe(503);
      expect(busy.headers.get("retry-after")).toBe("1");
      expect(((await busy.json()) as { code: string }).code).toBe("BUSY");
      await gw.close();
      closed = true;
      while (!(await reader.read()).done); // the watch's response ended
      expect(gw.stats().streamsOpen).toBe(0);
    } finally {
      if (!closed) await gw.close();
    }
  });
});

describe("OpenAPI and curl", () => {
  it("documents every route the app serves, with its methods", async () => {
    const doc = (await (await g.call("/openapi.json", { token: null })).json()) as { openapi: string; paths: Record<string, Record<string, unknown>> };
    expect(doc).toEqual(JSON.parse(JSON.stringify(openApiDocument())));
    expect(doc.openapi).toMatch(/^3\./);
    const { app } = createGatewayApp({ client: g.client, tokens: undefined, limits: resolveHttpLimits(), logger: silentLogger });
    const served = app.routes.filter((r) => r.method !== "ALL").map((r) => [r.path.replace(/:([a-z]+)/g, "{$1}"), r.method.toLowerCase()] as const);
    expect(served.length).toBeGreaterThanOrEqual(12);
    for (const [p, method] of served) expect(doc.paths[p]?.[method], `${method} ${p}`).toBeDefined();
    const documented = Object.entries(doc.paths).flatMap(([p, ops]) => Object.keys(ops).filter((k) => k !== "parameters").map((m) => `${m} ${p}`));
    expect(documented.sort()).toEqual(served.map(([p, m]) => `${m} ${p}`).sort());
  });

  it("works with curl: PUT, GET with the ETag, conditional PUT refused with 412", async () => {
    const url = `${g.gateway.url}/kv/${loc("acct/curl/cfg")}/greeting`;
    const h = ["-H", `Authorization: Bearer ${TOKENS.admin}`];
    const put = await run("curl", ["-sS", "-X", "PUT", ...h, "--data-binary", "hi there", url]);
    const { revision } = JSON.parse(put.stdout) as { revision: number };
    const get = await run("curl", ["-sS", "-i", ...h, url]);
    expect(get.stdout).toMatch(/^HTTP\/1\.1 200/);
    expect(get.stdout).toMatch(new RegExp(`etag: "${revision}"`, "i"));
    expect(get.stdout.endsWith("hi there")).toBe(true);
    const cas = await run("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT", ...h, "-H", `If-Match: "${revision + 100}"`, "--data-binary", "x", url]);
    expect(cas.stdout).toBe("412");
    const noToken = await run("curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", url]);
    expect(noToken.stdout).toBe("401");
  });
});

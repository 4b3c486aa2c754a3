/**
 * When an SSE watch answers its status (routes-streams.ts, httpWatchStartMs): only once the server
 * accepted the watch's start, so a start it refuses gets its error status and JSON body instead of
 * a 200 that ends at once with `event: error` (which an EventSource reconnects to for good), and
 * the slot and the watch are given back; a normal watch answers 200 as soon as its replay began,
 * long before the bound; a start still pending at the bound (no server reachable) answers 200.
 * Real nats-server, real Strata server, real gateway.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { TokenTable } from "../../src/http/auth.js";
import { startGateway } from "../../src/http/gateway.js";
import { StrataClient } from "../../src/net/client/client.js";
import { enc, loc, sseEvents, startGatewayStack, TOKEN_DOC, TOKENS, until, type GatewayStack } from "./gateway-stack.js";

/** Far past the test's own timeout: a watch that answers must have been told its start, not waited out the bound. */
const START_MS = 60_000;

let g: GatewayStack;
beforeAll(async () => {
  g = await startGatewayStack({ limits: { httpWatchStartMs: START_MS } });
});
afterAll(async () => {
  await g?.stop();
});

const watchPath = (location: string) => `/streams/${loc(location)}/watch`;

describe("the status of an SSE watch", () => {
  it("a watch the server refuses at its start (a kv location: WRONG_KIND) answers 409 with its JSON error, and gives back its slot (GET and HEAD)", async () => {
    await g.client.kv("acct/ws/kv").set("k", enc("v"));
    for (const method of ["GET", "HEAD"]) {
      const started = Date.now();
      const r = await g.call(watchPath("acct/ws/kv"), { method });
      expect(r.status, method).toBe(409);
      expect(r.headers.get("content-type"), method).toBe("application/json");
      if (method === "GET") expect(((await r.json()) as { code: string }).code).toBe("WRONG_KIND");
      else expect(await r.text()).toBe("");
      expect(Date.now() - started).toBeLessThan(START_MS);
      // Given back before the answer went out, not when a reader cancels a body.
      expect(g.gateway.stats().streamsOpen, method).toBe(0);
    }
    // The location itself is untouched: its kv route answers as before.
    expect((await g.call(`/kv/${loc("acct/ws/kv")}/k`)).status).toBe(200);
  });

  it("a normal watch answers 200 once its replay began, long before httpWatchStartMs, and delivers the replay and live changes", async () => {
    const s = g.client.stream("acct/ws/s");
    await s.append({ value: enc("a") });
    const empty = new AbortController();
    const quiet = await g.call(watchPath("acct/ws/empty"), { signal: empty.signal }); // no message: only the replay's end frame
    expect(quiet.status).toBe(200);
    expect(quiet.headers.get("content-type")).toBe("text/event-stream");
    const controller = new AbortController();
    const r = await g.call(watchPath("acct/ws/s"), { signal: controller.signal });
    expect(r.status).toBe(200);
    expect(g.gateway.stats().streamsOpen).toBe(2);
    const events = sseEvents(r);
    const first = (await events.next()).value!;
    expect([first.id, first.event]).toEqual(["1", "set"]);
    await s.append({ value: enc("b") });
    const second = (await events.next()).value!;
    expect([second.id, second.event]).toEqual(["2", "set"]);
    expect(Buffer.from((JSON.parse(second.data) as { value: string }).value, "base64").toString()).toBe("b");
    controller.abort();
    empty.abort();
    await events.return(undefined);
    await until(() => g.gateway.stats().streamsOpen === 0, "the watches' slots to come back");
  });

  it("a start still pending at httpWatchStartMs (no server for the location) answers 200 then, and the watch goes on", async () => {
    const boundMs = 300;
    const client = new StrataClient(g.stack.nc, { server: "nobody-serves-this", timeoutMs: 200 });
    const gw = await startGateway({ client, port: 0, tokens: TokenTable.from(TOKEN_DOC), limits: { httpWatchStartMs: boundMs } });
    try {
      const controller = new AbortController();
      const asked = Date.now();
      const r = await fetch(`${gw.url}${watchPath("acct/ws/nowhere")}`, { headers: { authorization: `Bearer ${TOKENS.admin}` }, signal: controller.signal });
      expect(r.status).toBe(200);
      expect(Date.now() - asked).toBeGreaterThanOrEqual(boundMs - 5);
      const reader = r.body!.pipeThrough(new TextDecoderStream()).getReader();
      expect((await reader.read()).value).toBe(": strata watch\n\n");
      expect(gw.stats().streamsOpen).toBe(1);
      controller.abort();
      await reader.cancel().catch(() => {});
      await until(() => gw.stats().streamsOpen === 0, "the pending watch's slot to come back");
    } finally {
      await gw.close();
      client.close();
    }
  });
});

/**
 * The gateway's stream routes through real HTTP against a real nats-server and a real standalone
 * Strata server: appends (Idempotency-Key = msgId), single reads, deletes, NDJSON listings of many
 * messages (values in base64) that a slow or vanishing reader cannot make the gateway hold, SSE
 * watches resumed with Last-Event-ID, and a value larger than the gateway's buffer streamed through
 * to the server.
 */
import { request } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { enc, loc, sseEvents, startGatewayStack, TOKENS, until, type GatewayStack } from "./gateway-stack.js";

let g: GatewayStack;
beforeAll(async () => {
  // A small buffer limit, so that a 3 MiB body is streamed (and crosses NATS as an upload).
  g = await startGatewayStack({ limits: { httpBodyBufferBytesMax: 64 * 1024 } });
});
afterAll(async () => {
  await g?.stop();
});

const path = (location: string, rest = "") => `/streams/${loc(location)}${rest}`;

interface Line {
  seq: number;
  timestamp: number;
  value: string;
}

describe("streams over HTTP", () => {
  it("POST appends and answers { seq, revision, timestamp }; GET /<seq> returns the bytes; absent seqs are 404", async () => {
    const p = path("acct/alice/chat");
    const a = await g.call(p, { method: "POST", body: "hello" });
    expect(a.status).toBe(200);
    const ra = (await a.json()) as { seq: number; timestamp: number; revision: number };
    expect(ra.seq).toBe(1);
    expect(ra.timestamp).toBeGreaterThan(0);
    const b = (await (await g.call(p, { method: "POST", body: new Uint8Array([9, 0, 9]) })).json()) as { seq: number };
    expect(b.seq).toBe(2);
    const got = await g.call(path("acct/alice/chat", "/1"));
    expect(got.headers.get("strata-seq")).toBe("1");
    expect(Number(got.headers.get("strata-timestamp"))).toBe(ra.timestamp);
    expect(await got.text()).toBe("hello");
    expect(new Uint8Array(await (await g.call(path("acct/alice/chat", "/2"))).arrayBuffer())).toEqual(new Uint8Array([9, 0, 9]));
    const missing = await g.call(path("acct/alice/chat", "/99"));
    expect(missing.status).toBe(404);
    expect(((await missing.json()) as { code: string }).code).toBe("NOT_FOUND");
  });

  it("Idempotency-Key makes a repeated POST return the first seq and write nothing", async () => {
    const p = path("acct/alice/idem");
    const first = (await (await g.call(p, { method: "POST", body: "once", headers: { "idempotency-key": "order-17" } })).json()) as { seq: number };
    const again = (await (await g.call(p, { method: "POST", body: "once", headers: { "idempotency-key": "order-17" } })).json()) as { seq: number; duplicate?: boolean };
    expect(again).toMatchObject({ seq: first.seq, duplicate: true });
    expect((await g.client.stream("acct/alice/idem").inventory()).count).toBe(1);
  });

  it("DELETE /<seq> deletes one message; DELETE with ?end_seq deletes up to it, without, all", async () => {
    const location = "acct/alice/del";
    await g.client.stream(location).appendMany(Array.from({ length: 6 }, (_, i) => ({ message: { value: enc(`m${i + 1}`) } })));
    expect(await (await g.call(path(location, "/2"), { method: "DELETE" })).json()).toMatchObject({ deleted: true });
    expect(await (await g.call(path(location, "/2"), { method: "DELETE" })).json()).toMatchObject({ deleted: false });
    expect(await (await g.call(`${path(location)}?end_seq=4`, { method: "DELETE" })).json()).toMatchObject({ count: 3 });
    expect((await g.client.stream(location).inventory()).firstSeq).toBe(5);
    expect(await (await g.call(path(location), { method: "DELETE" })).json()).toMatchObject({ count: 2 });
    expect((await g.client.stream(location).inventory()).count).toBe(0);
  });

  it("GET ?start_seq streams every message from there as NDJSON with base64 values, and releases its slot", async () => {
    const location = "acct/alice/ndjson";
    const total = 5000;
    for (let i = 0; i < total; i += 500) {
      await g.client.stream(location).appendMany(Array.from({ length: 500 }, (_, j) => ({ message: { value: enc(`message ${i + j + 1}`) } })));
    }
    const r = await g.call(`${path(location)}?start_seq=11`);
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toBe("application/x-ndjson");
    const text = await r.text();
    expect(text.endsWith("\n")).toBe(true);
    const lines = text.trimEnd().split("\n").map((l) => JSON.parse(l) as Line);
    expect(lines.length).toBe(total - 10);
    lines.forEach((l, i) => {
      expect(l.seq).toBe(i + 11);
      expect(Buffer.from(l.value, "base64").toString()).toBe(`message ${i + 11}`);
    });
    await until(() => g.gateway.stats().streamsOpen === 0, "the NDJSON slot to be released");
  });

  it("a reader that goes away mid-listing ends the reply stream (the slot comes back, the server's stream is cancelled)", async () => {
    // ~22 MB of NDJSON: far more than socket and fetch buffers hold, so the listing cannot be
    // finished while the reader has taken only its first chunk.
    const location = "acct/alice/ndjson-big";
    const value = new Uint8Array(4096).fill(65);
    for (let i = 0; i < 4000; i += 250) await g.client.stream(location).appendMany(Array.from({ length: 250 }, () => ({ message: { value } })));
    const r = await g.call(path(location));
    const reader = r.body!.getReader();
    const first = await reader.read();
    expect(first.done).toBe(false);
    expect(g.gateway.stats().streamsOpen).toBe(1);
    await reader.cancel();
    await until(() => g.gateway.stats().streamsOpen === 0, "the cancelled listing's slot to be released");
    // The gateway still serves listings afterwards.
    expect((await (await g.call(`${path(location)}?start_seq=3999`)).text()).trimEnd().split("\n")).toHaveLength(2);
  });

  it("bad ?start_seq and bad seqs in the path are 400, not a crash", async () => {
    for (const bad of ["?start_seq=0", "?start_seq=-1", "?start_seq=abc", "?start_seq=1e3", "?start_seq=99999999999999999999"]) {
      const r = await g.call(`${path("acct/alice/chat")}${bad}`);
      expect(r.status, bad).toBe(400);
    }
    for (const bad of ["/0", "/-3", "/1.5", "/abc", "/99999999999999999999", "/%00"]) {
      const r = await g.call(path("acct/alice/chat", bad));
      expect(r.status, bad).toBe(400);
      expect(((await r.json()) as { code: string }).code).toBe("INVALID_ARGUMENT");
    }
  });

  it("GET /watch sends SSE set events with id = seq, live changes after the replay, and resumes after Last-Event-ID", async () => {
    const location = "acct/alice/watch";
    const s = g.client.stream(location);
    await s.appendMany([1, 2, 3].map((i) => ({ message: { value: enc(`w${i}`) } })));
    const controller = new AbortController();
    const r = await g.call(path(location, "/watch"), { signal: controller.signal });
    expect(r.status).toBe(200);
    expect(r.headers.get("content-type")).toBe("text/event-stream");
    const events = sseEvents(r);
    const seen: Array<{ id?: string; event?: string; data: Record<string, unknown> }> = [];
    const take = async (n: number) => {
      for (let i = 0; i < n; i++) {
        const e = (await events.next()).value!;
        seen.push({ id: e.id, event: e.event, data: JSON.parse(e.data) as Record<string, unknown> });
      }
    };
    await take(3);
    expect(seen.map((e) => [e.id, e.event, Buffer.from(e.data.value as string, "base64").toString()])).toEqual([
      ["1", "set", "w1"],
      ["2", "set", "w2"],
      ["3", "set", "w3"],
    ]);
    await s.append({ value: enc("w4") });
    await s.delete(2);
    await take(2);
    expect(seen[3]).toMatchObject({ id: "4", event: "set" });
    expect(seen[4]).toMatchObject({ id: undefined, event: "delete", data: { seq: 2 } });
    controller.abort();
    await events.return(undefined);
    await until(() => g.gateway.stats().streamsOpen === 0, "the watch's slot to be released");

    // Reconnect as EventSource does, with the last id seen: the replay starts after it.
    await s.append({ value: enc("w5") });
    const again = new AbortController();
    const r2 = await g.call(path(location, "/watch"), { signal: again.signal, headers: { "last-event-id": "4" } });
    const resumed = sseEvents(r2);
    const next = (await resumed.next()).value!;
    expect(next.id).toBe("5");
    expect(Buffer.from((JSON.parse(next.data) as { value: string }).value, "base64").toString()).toBe("w5");
    again.abort();
    await resumed.return(undefined);
    expect((await g.call(path(location, "/watch"), { headers: { "last-event-id": "x1" } })).status).toBe(400);
    await until(() => g.gateway.stats().streamsOpen === 0, "the resumed watch's slot to be released");
  });

  it("a body larger than the gateway's buffer streams through to the server, byte for byte", async () => {
    const big = new Uint8Array(3 * 1024 * 1024 + 17);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31 + 7) & 0xff;
    const r = await g.call(path("acct/alice/big"), { method: "POST", body: big });
    expect(r.status).toBe(200);
    const { seq } = (await r.json()) as { seq: number };
    const back = new Uint8Array(await (await g.call(path("acct/alice/big", `/${seq}`))).arrayBuffer());
    expect(back.length).toBe(big.length);
    expect(Buffer.compare(back, big)).toBe(0);
    const kv = await g.call(`/kv/${loc("acct/alice/bigkv")}/k`, { method: "PUT", body: big });
    expect(kv.status).toBe(200);
    expect(Buffer.compare(new Uint8Array(await (await g.call(`/kv/${loc("acct/alice/bigkv")}/k`)).arrayBuffer()), big)).toBe(0);
    expect(g.gateway.stats().bodyInflightBytes).toBe(0);
  });

  it("a streamed body is never held whole: mid-upload the gateway reserves only its buffer limit", async () => {
    const total = 3 * 1024 * 1024;
    const half = new Uint8Array(total / 2).fill(7);
    const url = new URL(`${g.gateway.url}${path("acct/alice/paced")}`);
    const answer = new Promise<{ status: number; body: string }>((resolve, reject) => {
      const req = request(url, { method: "POST", headers: { authorization: `Bearer ${TOKENS.admin}`, "content-length": String(total) } }, (res) => {
        let body = "";
        res.setEncoding("utf8").on("data", (d: string) => (body += d));
        res.on("end", () => resolve({ status: res.statusCode!, body }));
      });
      req.on("error", reject);
      req.write(half);
      // Half the body is sent; the rest waits until the gateway shows it is streaming, holding
      // its 64 KiB reservation (a held body would reserve all 3 MiB).
      until(() => g.gateway.stats().bodyInflightBytes === 64 * 1024, "the streamed body's reservation").then(() => req.end(half), reject);
    });
    const r = await answer;
    expect(r.status).toBe(200);
    const { seq } = JSON.parse(r.body) as { seq: number };
    expect((await g.client.stream("acct/alice/paced").get(seq))?.value.length).toBe(total);
    expect(g.gateway.stats().bodyInflightBytes).toBe(0);
  });
});

/**
 * The gateway's kv routes through real HTTP (Node fetch) against a real nats-server and a real
 * standalone Strata server: values as bytes with the revision in ETag, If-Match / If-None-Match
 * as the server's expectedRevision (412 when unmet, checked by the server, not the gateway),
 * 304 for a current If-None-Match, deletes, listings streamed as a JSON array, and keys with
 * reserved characters percent-encoded.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { enc, loc, startGatewayStack, type GatewayStack } from "./gateway-stack.js";

let g: GatewayStack;
beforeAll(async () => {
  g = await startGatewayStack();
});
afterAll(async () => {
  await g?.stop();
});

const path = (location: string, key?: string) => `/kv/${loc(location)}${key === undefined ? "" : `/${encodeURIComponent(key)}`}`;

describe("kv over HTTP", () => {
  it("PUT answers { revision } and an ETag; GET returns the bytes with that ETag; absent keys are 404", async () => {
    const value = new Uint8Array([0, 1, 2, 255, 254]);
    const put = await g.call(path("acct/alice/cfg", "theme"), { method: "PUT", body: value });
    expect(put.status).toBe(200);
    const { revision } = (await put.json()) as { revision: number };
    expect(revision).toBeGreaterThan(0);
    expect(put.headers.get("etag")).toBe(`"${revision}"`);

    const get = await g.call(path("acct/alice/cfg", "theme"));
    expect(get.status).toBe(200);
    expect(get.headers.get("content-type")).toBe("application/octet-stream");
    expect(get.headers.get("etag")).toBe(`"${revision}"`);
    expect(new Uint8Array(await get.arrayBuffer())).toEqual(value);
    // The same bytes as the server holds.
    expect(Array.from((await g.client.kv("acct/alice/cfg").get("theme"))!.value)).toEqual(Array.from(value));

    const missing = await g.call(path("acct/alice/cfg", "nope"));
    expect(missing.status).toBe(404);
    expect(await missing.json()).toMatchObject({ code: "NOT_FOUND" });
  });

  it("If-Match writes only over the named revision, else 412 and nothing changes", async () => {
    const p = path("acct/alice/cas", "k");
    const first = (await (await g.call(p, { method: "PUT", body: "v1" })).json()) as { revision: number };
    const ok = await g.call(p, { method: "PUT", body: "v2", headers: { "if-match": `"${first.revision}"` } });
    expect(ok.status).toBe(200);
    const second = (await ok.json()) as { revision: number };
    expect(second.revision).toBeGreaterThan(first.revision);

    const stale = await g.call(p, { method: "PUT", body: "v3", headers: { "if-match": `"${first.revision}"` } });
    expect(stale.status).toBe(412);
    expect(await stale.json()).toMatchObject({ code: "CONFLICT" });
    expect(await (await g.call(p)).text()).toBe("v2");
  });

  it("If-None-Match: * creates only; a second create is 412", async () => {
    const p = path("acct/alice/cas", "once");
    const a = await g.call(p, { method: "PUT", body: "first", headers: { "if-none-match": "*" } });
    expect(a.status).toBe(200);
    const b = await g.call(p, { method: "PUT", body: "second", headers: { "if-none-match": "*" } });
    expect(b.status).toBe(412);
    expect(await (await g.call(p)).text()).toBe("first");
  });

  it("refuses preconditions it cannot honour exactly with 400, writing nothing", async () => {
    const p = path("acct/alice/cas", "odd");
    const cases: Array<Record<string, string>> = [{ "if-match": "*" }, { "if-match": '"1", "2"' }, { "if-match": "W/\"1\"" }, { "if-none-match": '"3"' }, { "if-match": '"1"', "if-none-match": "*" }];
    for (const headers of cases) {
      const r = await g.call(p, { method: "PUT", body: "x", headers });
      expect(r.status, JSON.stringify(headers)).toBe(400);
      expect(((await r.json()) as { code: string }).code).toBe("INVALID_ARGUMENT");
    }
    expect(await g.client.kv("acct/alice/cas").get("odd")).toBeUndefined();
  });

  it("GET with a current If-None-Match is 304; with a stale one, the value", async () => {
    const p = path("acct/alice/cache", "k");
    const { revision } = (await (await g.call(p, { method: "PUT", body: "v" })).json()) as { revision: number };
    const same = await g.call(p, { headers: { "if-none-match": `"${revision}"` } });
    expect(same.status).toBe(304);
    expect(same.headers.get("etag")).toBe(`"${revision}"`);
    const stale = await g.call(p, { headers: { "if-none-match": `"${revision - 1}"` } });
    expect(stale.status).toBe(200);
  });

  it("DELETE answers { deleted, revision }; a second DELETE reports deleted: false", async () => {
    const p = path("acct/alice/del", "k");
    await g.call(p, { method: "PUT", body: "v" });
    const a = await g.call(p, { method: "DELETE" });
    expect(a.status).toBe(200);
    expect(await a.json()).toMatchObject({ deleted: true });
    expect((await g.call(p)).status).toBe(404);
    expect(await (await g.call(p, { method: "DELETE" })).json()).toMatchObject({ deleted: false });
  });

  it("?ttl_ms sets a TTL the GET shows as Strata-Expires-At", async () => {
    const p = path("acct/alice/ttl", "k");
    expect((await g.call(`${p}?ttl_ms=600000`, { method: "PUT", body: "v" })).status).toBe(200);
    const r = await g.call(p);
    expect(Number(r.headers.get("strata-expires-at"))).toBeGreaterThan(Date.now());
    expect((await g.call(`${p}?ttl_ms=0`, { method: "PUT", body: "v" })).status).toBe(400);
  });

  it("a key the server refuses is a 400 INVALID_KEY", async () => {
    const r = await g.call(path("acct/alice/cfg", "sp ace"), { method: "PUT", body: "v" });
    expect(r.status).toBe(400);
    expect(((await r.json()) as { code: string }).code).toBe("INVALID_KEY");
  });

  it("keys with reserved characters travel percent-encoded, and the listing streams every key as a JSON array", async () => {
    const location = "acct/alice/many";
    // ("." and ".." cannot be addressed: URL parsers remove dot segments, even %2E%2E; see the README.)
    const keys = ["a/b", "a/b/c", "x.y", "...", "=", ...Array.from({ length: 1500 }, (_, i) => `key-${String(i).padStart(5, "0")}`)];
    const items = keys.map((key) => ({ key, value: enc(`v:${key}`) }));
    for (let i = 0; i < items.length; i += 500) await g.client.kv(location).setMany(items.slice(i, i + 500));
    for (const key of keys.slice(0, 5)) expect(await (await g.call(path(location, key))).text()).toBe(`v:${key}`);
    const list = await g.call(path(location));
    expect(list.status).toBe(200);
    expect(list.headers.get("content-type")).toBe("application/json");
    expect(((await list.json()) as string[]).sort()).toEqual([...keys].sort());
    const empty = await g.call(path("acct/alice/empty-kv"));
    expect(await empty.json()).toEqual([]);
  });
});

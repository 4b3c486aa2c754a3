/**
 * A server's metrics scraped through real HTTP (Node fetch) from its endpoint
 * (src/metrics/http-endpoint.ts), against a real nats-server, a standalone server with a
 * directory tier and a client:
 * - after known writes and reads, the counters moved by exactly what was done (records written
 *   and read by kind and op, ack latency samples by ack level (local and object), batch sizes adding up to the
 *   records, one fsync sample per batch, errors by code, changes published, locations, dedup);
 * - the tier: a seal uploads (uploads, bytes and latency samples agree with the tier's stats),
 *   everything uploaded is evicted (cacheBytes 1), and a read then faults in (a miss, a fault-in
 *   latency sample) where reads before counted as hits;
 * - every metric name passes the convention check and no location or key appears anywhere;
 * - /healthz and /readyz, 404 for anything else, and a port in use is a StrataError.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { startMetricsEndpoint, type MetricsEndpoint } from "../../src/metrics/http-endpoint.js";
import { Metrics } from "../../src/metrics/metrics.js";
import { StrataClient } from "../../src/net/client/client.js";
import { startServer, type StrataServer } from "../../src/net/server/server.js";
import { Store } from "../../src/store.js";
import { startBus, type Bus } from "../helpers/strata-stack.js";
import { conventionProblems, scrape, value, type Exposition } from "./exposition.js";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array | undefined) => (b === undefined ? undefined : new TextDecoder().decode(b));
const STREAM = "acct/metricz/chat";
const KV = "acct/metricz/settings";

let bus: Bus;
let store: Store;
let server: StrataServer;
let client: StrataClient;
let endpoint: MetricsEndpoint;
let metrics: Metrics;

beforeAll(async () => {
  bus = await startBus();
  metrics = new Metrics({ processMetrics: true });
  const tier = `dir:${await bus.tempDir("tier")}`;
  // Seals only when asked (no timer seal during the test), and every uploaded segment is evicted.
  store = await Store.open({ dir: await bus.tempDir("store"), id: "m1", tier, cacheBytes: 1, sealIntervalMs: 30_000, sweepTimers: false });
  server = await startServer({ store, nats: bus.nats.url, id: "m1", standalone: true, metrics });
  endpoint = await startMetricsEndpoint({ metrics, port: 0, ready: () => ({ recovered: true }) });
  client = new StrataClient(bus.nc, { server: "m1" });
});

afterAll(async () => {
  await endpoint?.close();
  await server?.stop();
  await store?.close();
  await bus?.stop();
});

describe("server metrics over HTTP", () => {
  let before: Exposition;

  it("counts writes, reads, acks, batches, errors and changes exactly", async () => {
    before = await scrape(endpoint.url);
    expect(value(before, "strata_writes_total")).toBe(0);
    const s = client.stream(STREAM);
    for (let i = 0; i < 4; i++) await s.append({ value: enc(`m${i}`) });
    await s.append({ value: enc("once") }, { msgId: "only-once" });
    await s.append({ value: enc("once") }, { msgId: "only-once" }); // a repeat: nothing written
    const kv = client.kv(KV);
    for (const key of ["theme", "lang", "tz"]) await kv.set(key, enc(`v-${key}`));
    expect(dec((await s.get(1))?.value)).toBe("m0");
    expect(dec((await s.get(5))?.value)).toBe("once");
    expect(dec((await kv.get("lang"))?.value)).toBe("v-lang");
    await expect(client.kv(STREAM).set("x", enc("y"))).rejects.toMatchObject({ code: "WRONG_KIND" });

    const e = await scrape(endpoint.url);
    expect(value(e, "strata_writes_total", { kind: "stream", op: "set" })).toBe(5);
    expect(value(e, "strata_writes_total", { kind: "kv", op: "set" })).toBe(3);
    expect(value(e, "strata_writes_total")).toBe(8);
    expect(value(e, "strata_write_bytes_total", { kind: "stream", op: "set" })).toBeGreaterThan(5 * 2);
    expect(value(e, "strata_reads_total", { kind: "stream", op: "get" })).toBe(2);
    expect(value(e, "strata_reads_total", { kind: "kv", op: "get" })).toBe(1);
    expect(value(e, "strata_read_bytes_total", { kind: "kv", op: "get" })).toBeGreaterThan(0);
    // Every write acknowledged (the repeated msgId too; the refused kv set is an error, not an ack).
    expect(value(e, "strata_ack_seconds_count", { ack: "local" })).toBe(9);
    expect(value(e, "strata_ack_seconds_count", { ack: "object" })).toBe(0);
    // Batch sizes add up to the records; one fsync sample per batch.
    expect(value(e, "strata_commit_batch_records_sum")).toBe(8);
    expect(value(e, "strata_commit_fsync_seconds_count")).toBe(store.stats().batches);
    expect(value(e, "strata_fsyncs_total")).toBe(store.stats().fsyncs);
    expect(value(e, "strata_errors_total", { code: "WRONG_KIND" })).toBe(1);
    expect(value(e, "strata_errors_total")).toBe(1);
    expect(value(e, "strata_changes_published_total")).toBe(8);
    expect(value(e, "strata_locations")).toBe(2);
    expect(value(e, "strata_dedup_entries")).toBe(1);
    expect(value(e, "strata_write_queue_depth")).toBe(0);
    // Requests by kind and op: 11 writes (coalesced or not), 3 gets.
    expect(value(e, "strata_requests_total")).toBe(server.stats().requests);
    expect(value(e, "strata_request_bytes_total")).toBeGreaterThan(0);
    // Reads of the local, not yet uploaded segment are cache hits.
    expect(value(e, "strata_tier_cache_hits_total")).toBe(3);
    expect(value(e, "strata_tier_cache_misses_total")).toBe(0);
  });

  it("counts the items of a coalesced batch as requests alone would be counted", async () => {
    const e0 = await scrape(endpoint.url);
    const s = client.stream("acct/metricz/batched");
    const outcomes = await Promise.allSettled(Array.from({ length: 8 }, (_, i) => s.append({ value: enc(`b${i}`) }, i === 3 ? { expectedLastSeq: 999 } : {})));
    expect(outcomes.filter((o) => o.status === "fulfilled")).toHaveLength(7);
    const e = await scrape(endpoint.url);
    expect(value(e, "strata_requests_total", { op: "batch" }) - value(e0, "strata_requests_total", { op: "batch" })).toBeGreaterThanOrEqual(1);
    expect(value(e, "strata_ack_seconds_count", { ack: "local" }) - value(e0, "strata_ack_seconds_count", { ack: "local" })).toBe(7);
    expect(value(e, "strata_errors_total", { code: "CONFLICT" }) - value(e0, "strata_errors_total", { code: "CONFLICT" })).toBe(1);
    expect(value(e, "strata_writes_total") - value(e0, "strata_writes_total")).toBe(7);
  });

  it("counts an ack: \"object\" write under its own ack level", async () => {
    const e0 = await scrape(endpoint.url);
    await client.stream(STREAM).append({ value: enc("shipped") }, { ack: "object" });
    const e = await scrape(endpoint.url);
    expect(value(e, "strata_ack_seconds_count", { ack: "object" }) - value(e0, "strata_ack_seconds_count", { ack: "object" })).toBe(1);
    expect(value(e, "strata_ack_seconds_count", { ack: "local" })).toBe(value(e0, "strata_ack_seconds_count", { ack: "local" }));
    expect(value(e, "strata_tier_uploads_total")).toBeGreaterThanOrEqual(1);
  });

  it("counts an appendMany under its strongest item's ack level (its reply waits for every item)", async () => {
    const e0 = await scrape(endpoint.url);
    const results = await client.stream(STREAM).appendMany([{ message: { value: enc("first, local") } }, { message: { value: enc("second, shipped") }, options: { ack: "object" } }]);
    expect(results.map((r) => r.ok)).toEqual([true, true]);
    const e = await scrape(endpoint.url);
    expect(value(e, "strata_ack_seconds_count", { ack: "object" }) - value(e0, "strata_ack_seconds_count", { ack: "object" })).toBe(1);
    expect(value(e, "strata_ack_seconds_count", { ack: "local" })).toBe(value(e0, "strata_ack_seconds_count", { ack: "local" }));
  });

  it("counts uploads after a seal and a fault-in after eviction", async () => {
    await store.sealActive();
    await store.tier!.drained();
    const stats = store.tier!.stats;
    const e = await scrape(endpoint.url);
    expect(stats.uploads).toBeGreaterThanOrEqual(1);
    expect(value(e, "strata_tier_uploads_total")).toBe(stats.uploads);
    expect(value(e, "strata_tier_upload_bytes_total")).toBe(stats.uploadedBytes);
    expect(value(e, "strata_tier_upload_seconds_count")).toBe(stats.uploads);
    expect(value(e, "strata_tier_evictions_total")).toBe(stats.evictions);
    expect(stats.evictions).toBeGreaterThanOrEqual(1);
    expect(value(e, "strata_tier_cache_limit_bytes")).toBe(1);
    expect(value(e, "strata_tier_cache_bytes")).toBe(store.tier!.localBytes);

    expect(dec((await client.stream(STREAM).get(2))?.value)).toBe("m1");
    const after = await scrape(endpoint.url);
    expect(value(after, "strata_tier_cache_misses_total")).toBe(1);
    expect(value(after, "strata_tier_fault_in_seconds_count")).toBe(1);
    expect(value(after, "strata_tier_cache_hits_total")).toBe(value(e, "strata_tier_cache_hits_total"));
  });

  it("counts the ack of a value sent in chunks (an upload) once, under its ack level", async () => {
    const a = await scrape(endpoint.url);
    const big = new Uint8Array(3 * bus.nc.info!.max_payload).fill(7); // several chunks
    await client.kv(KV).set("big", big);
    const b = await scrape(endpoint.url);
    expect(value(b, "strata_ack_seconds_count", { ack: "local" }) - value(a, "strata_ack_seconds_count", { ack: "local" })).toBe(1);
    expect(value(b, "strata_errors_total")).toBe(value(a, "strata_errors_total"));
  });

  it("every name follows the conventions, and no location or key appears", async () => {
    const e = await scrape(endpoint.url);
    expect(conventionProblems(e)).toEqual([]);
    // The default process metrics are there, under their standard names.
    expect(e.types.get("process_cpu_user_seconds_total")).toBe("counter");
    expect([...e.types.keys()].filter((n) => n.startsWith("strata_")).length).toBeGreaterThan(25);
    for (const needle of ["acct", "metricz", "chat", "settings", "batched", "theme", "only-once", "m1\""]) expect(e.text).not.toContain(needle);
    // Label values come from fixed sets.
    const labelValues = new Set(e.samples.flatMap((s) => Object.entries(s.labels).filter(([k]) => k !== "le" && k !== "quantile").map(([k, v]) => `${k}=${v}`)));
    for (const lv of labelValues) expect(lv).toMatch(/^(kind=(stream|kv|none)|op=[a-zA-Z]+|ack=(local|object)|code=[A-Z_]+|[a-z_]+=.*)$/);
  });

  it("serves /healthz, /readyz and 404, and refuses a port in use with a StrataError", async () => {
    const health = await fetch(`${endpoint.url}/healthz`);
    expect(health.status).toBe(200);
    const ready = await fetch(`${endpoint.url}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toEqual({ ready: true, failing: [], checks: { recovered: true } });
    expect((await fetch(`${endpoint.url}/nope`)).status).toBe(404);
    expect((await fetch(`${endpoint.url}/metrics`, { method: "POST" })).status).toBe(405);
    const taken = startMetricsEndpoint({ metrics: new Metrics(), port: endpoint.port, ready: () => ({}) });
    await expect(taken).rejects.toBeInstanceOf(StrataError);
    await expect(taken).rejects.toMatchObject({ code: "UNAVAILABLE", message: expect.stringContaining("in use") });
  });

  it("a registry records each store once", () => {
    expect(() => store.instrument(new Metrics())).toThrow(StrataError);
  });
});

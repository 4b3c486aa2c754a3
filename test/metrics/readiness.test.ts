/**
 * /readyz of a coordinated server and of a coordinator, through real HTTP against a real
 * nats-server (started here, so it can be stopped by its PID), with the checks the CLI uses
 * (src/metrics/readiness.ts):
 * - the server's endpoint is up before the server: /healthz 200, /readyz 503 naming `recovered`
 *   (and nats, lease); once the server has started and holds its lease, 200;
 * - the coordinator's metrics count what happened (register, locate, servers alive, assignments)
 *   and the server's count its lease and epoch changes; every name passes the convention check
 *   and no location appears;
 * - the coordinator stops: its /readyz is 503 (`state`) at once, and the server's goes 503
 *   (`lease`) once its lease runs out (short lease);
 * - the nats-server stops: the server's /readyz names `nats` too, /healthz stays 200.
 */
import { connect, type NatsConnection } from "nats";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startMetricsEndpoint, type MetricsEndpoint } from "../../src/metrics/http-endpoint.js";
import { Metrics } from "../../src/metrics/metrics.js";
import { watchNats } from "../../src/metrics/nats-watch.js";
import { coordinatorReadiness, serverReadiness, type CoordinatorLive, type ServerLive } from "../../src/metrics/readiness.js";
import { StrataClient } from "../../src/net/client/client.js";
import { startCoordinator, type Coordinator } from "../../src/net/coord/coordinator.js";
import { startServer, type StrataServer } from "../../src/net/server/server.js";
import { startNatsServer, type RunningNatsServer } from "../../src/testing/nats-server.js";
import { waitFor } from "../../src/testing/process.js";
import { conventionProblems, scrape, value } from "./exposition.js";

const LEASE_MS = 1000;
const enc = (s: string) => new TextEncoder().encode(s);

let nats: RunningNatsServer;
let dir: string;
let ncServer: NatsConnection;
let ncCoord: NatsConnection;
let ncClient: NatsConnection;
let coordinator: Coordinator | undefined;
let server: StrataServer | undefined;
let serverEndpoint: MetricsEndpoint;
let coordEndpoint: MetricsEndpoint;
const serverMetrics = new Metrics();
const coordMetrics = new Metrics();
const serverLive: ServerLive = {};
const coordLive: CoordinatorLive = {};

async function readyz(endpoint: MetricsEndpoint): Promise<{ status: number; body: { ready: boolean; failing: string[]; checks: Record<string, boolean> } }> {
  const res = await fetch(`${endpoint.url}/readyz`);
  return { status: res.status, body: (await res.json()) as never };
}

beforeAll(async () => {
  nats = await startNatsServer();
  dir = await mkdtemp(join(tmpdir(), "strata-metrics-"));
  // Endpoints first, as the CLI starts them: they answer while the rest comes up.
  serverEndpoint = await startMetricsEndpoint({ metrics: serverMetrics, port: 0, ready: serverReadiness(serverLive, true) });
  coordEndpoint = await startMetricsEndpoint({ metrics: coordMetrics, port: 0, ready: coordinatorReadiness(coordLive) });
  const opts = { servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 100 };
  [ncServer, ncCoord, ncClient] = await Promise.all([connect(opts), connect(opts), connect(opts)]);
});

afterAll(async () => {
  serverLive.nats?.stop();
  coordLive.nats?.stop();
  await serverEndpoint?.close();
  await coordEndpoint?.close();
  await server?.stop().catch(() => undefined);
  await coordinator?.stop().catch(() => undefined);
  for (const nc of [ncServer, ncCoord, ncClient]) await nc?.close().catch(() => undefined);
  await nats?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe("readiness and coordinated metrics over HTTP", () => {
  it("is 503 until the server has recovered and holds its lease, then 200", async () => {
    expect((await fetch(`${serverEndpoint.url}/healthz`)).status).toBe(200);
    const early = await readyz(serverEndpoint);
    expect(early.status).toBe(503);
    expect(early.body.ready).toBe(false);
    expect(early.body.failing).toEqual(["recovered", "nats", "lease"]);
    expect((await readyz(coordEndpoint)).body.failing).toEqual(["state", "nats"]);

    coordLive.nats = watchNats(ncCoord);
    coordinator = await startCoordinator({ nc: ncCoord, dataDir: join(dir, "coord"), leaseMs: LEASE_MS, metrics: coordMetrics });
    coordLive.coordinator = coordinator;
    expect(await readyz(coordEndpoint)).toMatchObject({ status: 200, body: { ready: true, failing: [] } });

    serverLive.nats = watchNats(ncServer);
    expect((await readyz(serverEndpoint)).body.failing).toEqual(["recovered", "lease"]);
    server = await startServer({ id: "r1", dir: join(dir, "r1"), storeOptions: { tier: `dir:${join(dir, "tier")}` }, nats: ncServer, metrics: serverMetrics });
    serverLive.server = server;
    await waitFor("the server's /readyz to answer 200", async () => (await readyz(serverEndpoint)).status === 200, 20_000);
    expect((await readyz(serverEndpoint)).body).toEqual({ ready: true, failing: [], checks: { recovered: true, nats: true, lease: true } });
  });

  it("counts the coordinator's requests and the server's lease and epochs", async () => {
    const client = new StrataClient(ncClient, { timeoutMs: 10_000 });
    await client.stream("acct/readyz/log").append({ value: enc("x") });
    await client.stream("acct/readyz/log").append({ value: enc("y") });
    const c = await scrape(coordEndpoint.url);
    expect(conventionProblems(c)).toEqual([]);
    expect(value(c, "strata_coordinator_requests_total", { op: "register" })).toBe(1);
    expect(value(c, "strata_coordinator_requests_total", { op: "locate" })).toBeGreaterThanOrEqual(1);
    expect(value(c, "strata_coordinator_request_seconds_count", { op: "register" })).toBe(1);
    expect(value(c, "strata_coordinator_servers")).toBe(1);
    expect(value(c, "strata_coordinator_servers_alive")).toBe(1);
    expect(value(c, "strata_coordinator_assignments")).toBe(1);
    expect(value(c, "strata_coordinator_errors_total")).toBe(0);
    expect(c.text).not.toContain("readyz/");
    expect(c.text).not.toContain("r1");

    const s = await scrape(serverEndpoint.url);
    expect(conventionProblems(s)).toEqual([]);
    expect(value(s, "strata_lease_held")).toBe(1);
    expect(value(s, "strata_lease_remaining_seconds")).toBeGreaterThan(0);
    expect(value(s, "strata_incarnation")).toBeGreaterThanOrEqual(1);
    expect(value(s, "strata_locations_held")).toBe(1);
    expect(value(s, "strata_epoch_changes_total")).toBe(1);
    expect(value(s, "strata_writes_total", { kind: "stream", op: "set" })).toBe(2);
    expect(s.text).not.toContain("acct");
    client.close();
  });

  it("goes 503 when the lease is lost (coordinator gone) and names nats when NATS goes away", async () => {
    await coordinator!.stop();
    expect(await readyz(coordEndpoint)).toMatchObject({ status: 503, body: { failing: ["state"] } });
    // No renewal answers any more: the lease runs out within LEASE_MS.
    await waitFor("the server's /readyz to name the lease", async () => (await readyz(serverEndpoint)).body.failing.includes("lease"), 20_000);
    const lost = await readyz(serverEndpoint);
    expect(lost.status).toBe(503);
    expect(lost.body.checks).toEqual({ recovered: true, nats: true, lease: false });
    expect(value(await scrape(serverEndpoint.url), "strata_lease_held")).toBe(0);

    await nats.stop();
    await waitFor("the server's /readyz to name nats", async () => (await readyz(serverEndpoint)).body.failing.includes("nats"), 20_000);
    expect((await readyz(serverEndpoint)).status).toBe(503);
    expect((await readyz(coordEndpoint)).body.failing).toEqual(["state", "nats"]);
    expect((await fetch(`${serverEndpoint.url}/healthz`)).status).toBe(200);
  });
});

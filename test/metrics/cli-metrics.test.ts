/**
 * `--metrics-port` of the CLI, as shipped: `strata server --metrics-port 0` logs the port it
 * bound, serves /metrics (Strata's and the process metrics) and /readyz (a standalone server has
 * no lease check), and stops cleanly on SIGTERM; `strata coordinator --metrics-port` on a port in
 * use exits 1 with a StrataError line, not a crash trace, before connecting anywhere.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { startNatsServer, type RunningNatsServer } from "../../src/testing/nats-server.js";
import { StrataProcess, runCli } from "../../src/testing/process.js";
import { conventionProblems, scrape, value } from "./exposition.js";

let nats: RunningNatsServer;
let dir: string;
let server: StrataProcess | undefined;

beforeAll(async () => {
  nats = await startNatsServer();
  dir = await mkdtemp(join(tmpdir(), "strata-cli-metrics-"));
});

afterAll(async () => {
  if (server?.running) await server.stop();
  await nats?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

it("serves metrics and readiness on the port it logs, and refuses a port in use cleanly", async () => {
  server = new StrataProcess("server", ["server", "--id", "c1", "--data", join(dir, "c1"), "--nats", nats.url, "--standalone", "--metrics-port", "0"], /ready on strata\.\{w,r\}/);
  await server.start();
  const url = /metrics on (http:\/\/127\.0\.0\.1:[0-9]+)\/metrics/.exec(server.output())?.[1];
  expect(url, server.output()).toBeDefined();
  const e = await scrape(url!);
  expect(conventionProblems(e)).toEqual([]);
  expect(e.types.get("strata_writes_total")).toBe("counter");
  expect(has(e.types, "process_resident_memory_bytes")).toBe(true);
  expect(value(e, "strata_locations")).toBe(0);
  const ready = await fetch(`${url}/readyz`);
  expect(ready.status).toBe(200);
  expect(await ready.json()).toEqual({ ready: true, failing: [], checks: { recovered: true, nats: true } });

  const port = new URL(url!).port;
  const refused = await runCli(["coordinator", "--data", join(dir, "coord"), "--nats", nats.url, "--metrics-port", port], 30_000);
  expect(refused.code).toBe(1);
  expect(refused.stderr).toMatch(/UNAVAILABLE.*metrics port 127\.0\.0\.1:[0-9]+ is in use/);
  expect(refused.stderr).not.toMatch(/\n\s+at /);

  expect(await server.stop()).toBe("0");
});

function has(types: Map<string, string>, name: string): boolean {
  return types.has(name);
}

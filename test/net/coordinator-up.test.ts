/**
 * `strata up` as a user runs it: one command starts nats-server, the coordinator and a server;
 * a StrataClient can write and read through the coordinator; SIGTERM stops everything it
 * started, including the nats-server process (checked by the PID in its pid file). With
 * `--metrics-port 0` one endpoint serves both the coordinator's and the server's metrics and a
 * /readyz holding both processes' checks.
 */
import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { connect } from "nats";
import { afterEach, expect, it } from "vitest";
import { StrataClient } from "../../src/net/client/client.js";
import { freePort } from "../../src/testing/nats-server.js";
import { conventionProblems, scrape, value } from "../metrics/exposition.js";

const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url));
const cleanups: Array<() => unknown> = [];

afterEach(async () => {
  while (cleanups.length > 0) await cleanups.pop()!();
});


function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

it("starts the whole stack, serves a client, and stops it all on SIGTERM", async () => {
  const dir = await mkdtemp(join(tmpdir(), "strata-up-"));
  cleanups.push(() => rm(dir, { recursive: true, force: true }));
  const port = await freePort();
  const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "up", "--data", dir, "--port", String(port), "--metrics-port", "0"], {
    cwd: REPO_ROOT,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  cleanups.push(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    await exited;
  });
  let output = "";
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`strata up did not get ready:\n${output}`)), 30_000);
    const onData = (chunk: Buffer) => {
      output += chunk.toString();
      if (output.includes("Strata is up")) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    void exited.then((code) => reject(new Error(`strata up exited with ${code}:\n${output}`)));
  });
  expect(output).toContain(`nats://127.0.0.1:${port}`);
  for (const sub of ["nats", "coordinator", "server", "tier"]) expect(existsSync(join(dir, sub))).toBe(true);
  const natsPid = Number(readFileSync(join(dir, "nats", "nats-server.pid"), "utf8"));
  expect(alive(natsPid)).toBe(true);

  const nc = await connect({ servers: `nats://127.0.0.1:${port}` });
  try {
    const client = new StrataClient(nc, { timeoutMs: 10_000 });
    const chat = client.stream("acct/alice/chat");
    const { seq } = await chat.append({ value: new TextEncoder().encode("hi") });
    expect(new TextDecoder().decode((await chat.get(seq))!.value)).toBe("hi");
    client.close();
  } finally {
    await nc.close();
  }

  const url = /metrics on (http:\/\/127\.0\.0\.1:[0-9]+)\/metrics/.exec(output)?.[1];
  expect(url, output).toBeDefined();
  const e = await scrape(url!);
  expect(conventionProblems(e)).toEqual([]);
  expect(value(e, "strata_locations")).toBeGreaterThanOrEqual(1); // the server's
  expect(e.types.get("strata_coordinator_requests_total")).toBe("counter"); // the coordinator's
  expect(e.types.has("process_resident_memory_bytes")).toBe(true);
  const ready = await fetch(`${url}/readyz`);
  expect(ready.status).toBe(200);
  expect(await ready.json()).toEqual({ ready: true, failing: [], checks: { coordinator_state: true, coordinator_nats: true, recovered: true, nats: true, lease: true } });

  child.kill("SIGTERM");
  expect(await exited).toBe(0);
  expect(alive(natsPid)).toBe(false);
});

/**
 * The logs of a real `strata server` process: started from the environment and a --config file
 * only (no flags), it writes one JSON object per line to stdout (level, event, fields); a torn
 * tail it cuts at start is an event with its facts; `--log-format pretty` is text for people;
 * a bad config file ends the process with `strata: INVALID_ARGUMENT: …` and exit code 1.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { segmentRecordsEnd } from "../../src/log/segment-end.js";
import { listSegmentIds, segmentPath } from "../../src/log/segment-files.js";
import { StrataClient } from "../../src/net/client/client.js";
import { Store } from "../../src/store.js";
import { SERVER_READY } from "../../src/testing/cluster.js";
import { StrataProcess, runCli } from "../../src/testing/process.js";
import { startBus, type Bus } from "../helpers/strata-stack.js";

let bus: Bus;
const procs: StrataProcess[] = [];
beforeAll(async () => {
  bus = await startBus();
}, 30_000);
afterAll(async () => {
  for (const p of procs) if (p.running) await p.kill9();
  await bus?.stop();
});

/** The JSON lines of a process's output (the harness's own lines start with "[harness]"). */
function jsonLines(output: string): Array<Record<string, unknown>> {
  return output
    .split("\n")
    .filter((l) => l.length > 0 && !l.startsWith("[harness]"))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

describe("strata server logs", () => {
  it("starts from env + config file alone and logs JSON events with fields, a cut torn tail included", async () => {
    const data = await bus.tempDir("envsrv");
    // A data directory whose active segment ends in 23 bytes of a torn (never acknowledged) write.
    const store = await Store.open({ dir: data, id: "envsrv" });
    await store.stream("t/s").append({ value: new TextEncoder().encode("kept") });
    await store.close();
    const seg = listSegmentIds(path.join(data, "segments")).at(-1)!;
    const file = segmentPath(path.join(data, "segments"), seg);
    const end = segmentRecordsEnd(file);
    fs.truncateSync(file, end);
    fs.appendFileSync(file, Buffer.alloc(23, 0xab));

    const config = path.join(await bus.tempDir("conf"), "strata.yaml");
    fs.writeFileSync(config, `data: ${JSON.stringify(data)}\nstandalone: true\nlog-level: debug\n`);
    const p = new StrataProcess("envsrv", ["server"], SERVER_READY, { env: { STRATA_ID: "envsrv", STRATA_NATS: bus.nats.url, STRATA_CONFIG: config } });
    procs.push(p);
    await p.start();

    const client = new StrataClient(bus.nc, { server: "envsrv" });
    expect((await client.stream("t/s").get(1))?.seq).toBe(1);

    const lines = jsonLines(p.output());
    expect(lines.find((e) => e.event === "torn_tail_cut")).toMatchObject({ level: 40, server: "envsrv", segment: seg, offset: end, bytes: 23, msg: expect.stringContaining("cut 23 bytes") });
    expect(lines.find((e) => e.event === "server_ready")).toMatchObject({ level: 30, server: "envsrv", data, standalone: true, pid: p.pid, time: expect.any(Number), msg: expect.stringMatching(/ready/) });

    expect(await p.stop()).toBe("0");
    const after = jsonLines(p.output()).map((e) => e.event);
    expect(after).toContain("shutdown_started");
    expect(after.at(-1)).toBe("stopped");
  }, 60_000);

  it("--log-format pretty writes text for people, not JSON", async () => {
    const data = await bus.tempDir("pretty");
    const p = new StrataProcess("pretty", ["server", "--id", "pretty1", "--data", data, "--nats", bus.nats.url, "--standalone", "--log-format", "pretty"], SERVER_READY);
    procs.push(p);
    await p.start();
    const ready = p.output().split("\n").find((l) => l.includes("ready on"))!;
    expect(ready).toMatch(/INFO/);
    expect(() => JSON.parse(ready)).toThrow();
    expect(await p.stop()).toBe("0");
  }, 60_000);

  it("exits 1 with strata: INVALID_ARGUMENT for a config file with an unknown key", async () => {
    const config = path.join(await bus.tempDir("bad"), "bad.json");
    fs.writeFileSync(config, JSON.stringify({ id: "x", data: "/tmp/x", sealIntervalMS: 5 }));
    const r = await runCli(["server", "--config", config], 30_000, { STRATA_NATS: bus.nats.url });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^strata: INVALID_ARGUMENT: the --config file .*bad\.json has the key "sealIntervalMS", which is no option/);
  }, 60_000);
});

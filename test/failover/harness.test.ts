/**
 * The failover harness itself (src/testing/cluster.ts, test/helpers/failover-*.ts), on
 * what works today: a real cluster starts (nats-server, coordinator and three servers as CLI
 * child processes sharing a dir: tier), a client writes and reads through the coordinator,
 * SIGKILL / SIGSTOP / SIGCONT / restart act on exactly the PID they name, the three-node NATS
 * cluster routes, and the verifier's analysis finds loss, duplicates and watcher gaps when they
 * are there. This file must pass before failover exists; the scenario files beside it need it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { pidAlive, startCluster, waitFor, type Cluster } from "../../src/testing/cluster.js";
import { analyse, type AnalysisInput } from "../helpers/failover-verify.js";
import { FailoverWorkload, readBack, type AckRecord } from "../helpers/failover-workload.js";

const enc = new TextEncoder();
const dec = new TextDecoder();

describe("cluster harness (one nats-server)", () => {
  let c: Cluster;
  beforeAll(async () => {
    // A short lease: the restart below waits out the killed incarnation's lease before serving.
    c = await startCluster({ servers: 3, sealIntervalMs: 200, leaseMs: 2000 });
  });
  afterAll(async () => {
    await c?.stop();
  });

  it("starts three servers and a coordinator as child processes, serves a client, and kills by PID", async () => {
    const pids = [c.coordinator.pid, ...c.servers.map((s) => s.pid)];
    expect(new Set(pids).size).toBe(4);
    for (const pid of pids) expect(pidAlive(pid)).toBe(true);

    const client = await c.client({ timeoutMs: 10_000 });
    const owners = new Map<string, string>();
    for (let i = 0; i < 12; i++) {
      const location = `smoke/l${i}`;
      const { seq } = await client.stream(location).append({ value: enc.encode(`v${i}`) }, { msgId: `m${i}`, ack: i % 2 ? "local" : "object" });
      expect(dec.decode((await client.stream(location).get(seq))!.value!)).toBe(`v${i}`);
      const answer = await c.locate(location);
      expect("code" in answer ? answer : answer.server).toSatisfy((s: unknown) => typeof s === "string" && c.serverIds.includes(s));
      owners.set(location, (answer as { server: string }).server);
    }
    // Rendezvous hashing over three servers spreads twelve locations over more than one.
    expect(new Set(owners.values()).size).toBeGreaterThan(1);

    const victim = c.servers[1]!;
    const pid = victim.pid;
    await victim.kill9();
    expect(victim.running).toBe(false);
    expect(pidAlive(pid)).toBe(false);
    for (const p of [c.coordinator, c.servers[0]!, c.servers[2]!]) expect(pidAlive(p.pid)).toBe(true);

    // Restart with the same id and data dir: its locations answer again with their history.
    await victim.restart();
    expect(victim.pid).not.toBe(pid);
    const mine = [...owners].filter(([, s]) => s === victim.name).map(([l]) => l);
    for (const location of mine) {
      const all = [];
      for await (const m of client.stream(location).getAll()) all.push(dec.decode(m.value!));
      expect(all).toEqual([`v${location.slice("smoke/l".length)}`]);
    }
  });

  it("pauses and resumes a server by PID; a request sent while paused is answered after SIGCONT", async () => {
    const client = await c.client({ timeoutMs: 10_000 });
    const location = "smoke/paused";
    await client.stream(location).append({ value: enc.encode("a") });
    const owner = (await c.locate(location)) as { server: string };
    const p = c.server(owner.server);
    p.pause();
    expect(p.paused).toBe(true);
    let answered = false;
    const pending = client.stream(location).append({ value: enc.encode("b") }, { msgId: "paused-b" }).then((r) => {
      answered = true;
      return r;
    });
    // Bounded check that nothing answers while it is stopped (the fault is the pause itself).
    await expect(waitFor("an answer from a stopped server", () => answered, 300)).rejects.toThrow(/timed out/);
    p.resume();
    const r = await pending;
    expect(r.seq).toBe(2);
    expect(pidAlive(p.pid)).toBe(true);
  });

  it("drives writers and watchers on 200 locations and verifies them: nothing lost with no fault", async () => {
    const clients = [await c.client({ timeoutMs: 10_000 }), await c.client({ timeoutMs: 10_000 })];
    const reader = await c.client({ timeoutMs: 10_000 });
    const wl = new FailoverWorkload({ clients, locations: 200, name: "wl", writeIntervalMs: 200 });
    wl.start();
    await wl.waitForAcks({ count: 3 }, 30_000);
    await wl.stop();
    const { stored, unreadable } = await readBack(reader, wl.plan);
    expect(unreadable).toEqual([]);
    await wl.waitForWatchers(stored, 15_000);
    wl.stopWatchers();
    const a = analyse({ ...wl.records(), stored });
    expect(a.acked.object).toBeGreaterThanOrEqual(300);
    expect(a.acked.local).toBeGreaterThanOrEqual(300);
    expect(a.objectLost).toEqual([]);
    expect(a.localLost).toEqual([]);
    expect(a.duplicates).toEqual([]);
    expect(a.foreign).toEqual([]);
    expect(a.failures).toEqual({});
    expect(a.watchers.watched).toBeGreaterThanOrEqual(40);
    expect(a.watchers).toMatchObject({ outOfOrder: [], duplicates: [], missed: [], sawLost: [] });
  });

  it("runs a strata CLI command to its end and reports its exit code", async () => {
    const r = await c.cli(["--help"], { withNats: false });
    expect(r.code).toBe(0);
    expect(r.stdout).toContain("server");
  });
});

describe("cluster harness (three routed nats-servers)", () => {
  let c: Cluster;
  beforeAll(async () => {
    c = await startCluster({ servers: 3, natsNodes: 3, sealIntervalMs: 200 });
  });
  afterAll(async () => {
    await c?.stop();
  });

  it("routes between nodes, serves clients on every node, and kills one nats-server by PID", async () => {
    expect(c.nats).toHaveLength(3);
    const clients = await Promise.all([0, 1, 2].map((n) => c.client({ timeoutMs: 10_000 }, n)));
    for (let i = 0; i < 6; i++) {
      const w = clients[i % 3]!;
      const r = clients[(i + 1) % 3]!;
      const { seq } = await w.stream(`routed/l${i}`).append({ value: enc.encode(`x${i}`) });
      expect(dec.decode((await r.stream(`routed/l${i}`).get(seq))!.value!)).toBe(`x${i}`);
    }
    const node = c.nats[2]!;
    const pid = node.pid;
    await node.kill9();
    expect(pidAlive(pid)).toBe(false);
    // The client that was on node 2 reconnects to another node and keeps working.
    const { seq } = await clients[2]!.stream("routed/after").append({ value: enc.encode("y") }, { msgId: "after-1" });
    expect(dec.decode((await clients[0]!.stream("routed/after").get(seq))!.value!)).toBe("y");
  });
});

describe("verifier analysis", () => {
  const ack = (seq: number, msgId: string, ackMode: "object" | "local", ackedAt = 1000): AckRecord => ({
    location: "v/a",
    kind: "stream",
    seq,
    msgId,
    ack: ackMode,
    sentAt: ackedAt - 1,
    ackedAt,
    duplicate: false,
  });
  const base = (): AnalysisInput => ({
    plan: [{ location: "v/a", index: 0, kind: "stream", ack: "object", watched: true }],
    acks: [ack(1, "m1", "object"), ack(2, "m2", "local"), ack(3, "m3", "object", 2000)],
    failures: [{ location: "v/a", msgId: "m4", code: "TIMEOUT", message: "", at: 1500 }],
    attempted: new Map([["v/a", new Set(["m1", "m2", "m3", "m4"])]]),
    watched: new Map([["v/a", [1, 2, 3].map((seq) => ({ revision: seq, op: "set", seq, msgId: `m${seq}`, at: 0 }))]]),
    stored: new Map([["v/a", { kind: "stream" as const, bySeq: new Map([[1, "m1"], [2, "m2"], [3, "m3"]]) }]]),
    kills: [{ at: 1800, locations: ["v/a"] }],
  });

  it("finds nothing wrong in a clean run and measures recovery from the kill", () => {
    const a = analyse(base());
    expect(a).toMatchObject({ objectLost: [], localLost: [], duplicates: [], foreign: [], unread: [], failures: { TIMEOUT: 1 } });
    expect(a.watchers).toMatchObject({ watched: 1, outOfOrder: [], duplicates: [], missed: [], sawLost: [] });
    expect(a.recovery[0]).toMatchObject({ p50: 200, p99: 200, unrecovered: [] });
  });

  it("finds lost acks at each level, a msgId stored twice, foreign values and watcher gaps, duplicates and disorder", () => {
    const input = base();
    input.stored = new Map([["v/a", { kind: "stream", bySeq: new Map([[1, "m1"], [2, "zombie"], [4, "m1"]]) }]]);
    input.watched.set("v/a", [
      { revision: 1, op: "set", seq: 1, msgId: "m1", at: 0 },
      { revision: 1, op: "set", seq: 1, msgId: "m1", at: 0 },
      { revision: 3, op: "set", seq: 3, msgId: "m3", at: 0 },
    ]);
    input.kills = [{ at: 5000, locations: ["v/a"] }];
    const a = analyse(input);
    expect(a.objectLost.map((x) => x.msgId)).toEqual(["m3"]);
    expect(a.localLost.map((x) => x.msgId)).toEqual(["m2"]);
    expect(a.duplicates).toEqual([{ location: "v/a", msgId: "m1", seqs: [1, 4] }]);
    expect(a.foreign).toEqual([{ location: "v/a", at: "seq 2", value: "zombie" }]);
    expect(a.watchers.duplicates).toEqual([{ location: "v/a", seq: 1 }]);
    expect(a.watchers.outOfOrder).toEqual([{ location: "v/a", revision: 1, after: 1 }]);
    expect(a.watchers.missed.map((m) => m.seq).sort()).toEqual([2, 4]);
    expect(a.watchers.sawLost).toEqual([{ location: "v/a", seq: 3, msgId: "m3" }]);
    expect(a.recovery[0]!.unrecovered).toEqual(["v/a"]);
  });

  it("accepts a watcher's rewind after a kill (lost changes superseded, a write applied again delivered again) and nothing else", () => {
    const input = base();
    input.watched.clear();
    input.stored = new Map([
      ["v/r", { kind: "stream", bySeq: new Map([[1, "m1"], [2, "m2"], [3, "m3b"], [4, "m4"]]) }],
      ["v/s", { kind: "stream", bySeq: new Map([[1, "m1"], [2, "m2"]]) }],
    ]);
    input.watched.set("v/r", [
      { revision: 1, op: "set", seq: 1, msgId: "m1", at: 0 },
      { revision: 2, op: "set", seq: 2, msgId: "m2", at: 0 },
      { revision: 3, op: "set", seq: 3, msgId: "m3lost", at: 6000 },
      { revision: 3, op: "set", seq: 3, msgId: "m3b", at: 7000 },
      { revision: 4, op: "set", seq: 4, msgId: "m4", at: 7100 },
    ]);
    // The same write applied again at the new owner (its first ack was lost with the old one).
    input.watched.set("v/s", [
      { revision: 1, op: "set", seq: 1, msgId: "m1", at: 0 },
      { revision: 2, op: "set", seq: 2, msgId: "m2", at: 6000 },
      { revision: 2, op: "set", seq: 2, msgId: "m2", at: 7000 },
    ]);
    input.kills = [{ at: 5000, locations: ["v/r", "v/s"] }];
    const a = analyse(input);
    expect(a.watchers).toMatchObject({ outOfOrder: [], duplicates: [], missed: [], sawLost: [{ location: "v/r", seq: 3, msgId: "m3lost" }], rewinds: 2 });
    // The same rewind before any kill is disorder.
    input.kills = [{ at: 50_000, locations: ["v/r"] }];
    expect(analyse(input).watchers.outOfOrder).toEqual([{ location: "v/r", revision: 3, after: 3 }, { location: "v/s", revision: 2, after: 2 }]);
  });
});

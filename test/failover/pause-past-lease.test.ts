/**
 * Failover scenario: SIGSTOP a server past its lease, let its locations move, write to them at
 * the new owner, then SIGCONT.
 * Asserts: locate moves every location it held to a live server; writes continue there; requests
 * sent straight to the paused server (queued while it is stopped, and sent again after SIGCONT)
 * are never acknowledged, and a read it answers shows the write acknowledged at the new owner
 * before the read was sent (no stale read); nothing it was sent while stopped ever becomes part of a location; no object-acked
 * write lost, no duplicates, watchers clean; the woken server keeps running.
 */
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { StrataClient } from "../../src/net/client/client.js";
import { waitFor } from "../../src/testing/cluster.js";
import { busiest, heldBy, locateAll } from "../helpers/failover-workload.js";
import { CLIENT_LIMITS, diagnoseOnFailure, FAILOVER_TEST_MS, expectLocalLossBounded, expectSafe, RECOVERY_WAIT_MS, startRun, type Run } from "./run.js";

const enc = new TextEncoder();
const dec = new TextDecoder();

let run: Run;
beforeAll(async () => {
  run = await startRun();
});
afterAll(async () => {
  await run?.cluster.stop();
});

type Outcome = { ok: true; value: unknown } | { ok: false; code: string };

async function outcome(p: Promise<unknown>): Promise<Outcome> {
  try {
    return { ok: true, value: await p };
  } catch (err) {
    return { ok: false, code: (err as { code?: string }).code ?? String(err) };
  }
}

/** A read of `location` by `client`: the messages (stream) or entries (kv) as plain values. */
async function readAll(client: StrataClient, location: string, kind: "stream" | "kv"): Promise<string[]> {
  const out: string[] = [];
  if (kind === "stream") for await (const m of client.stream(location).getAll()) out.push(`${m.seq}=${dec.decode(m.value!)}`);
  else for await (const e of client.kv(location).getAll()) out.push(`${e.key}=${dec.decode(e.value!)}`);
  return out;
}

it("a server paused past its lease loses its locations, then acknowledges nothing for them and serves no stale read", async () => {
  const { cluster, workload, reader } = run;
  diagnoseOnFailure(cluster);
  workload.start();
  await workload.waitForAcks({ count: 2 }, 30_000);

  const before = await locateAll(cluster, workload.locations);
  const victimId = busiest(before);
  const moved = heldBy(before, victimId);
  const victim = cluster.server(victimId);
  // Straight to the victim, bypassing the coordinator: what a client with a stale locate sees.
  const direct = await cluster.client({ server: victimId, timeoutMs: 6000, limits: CLIENT_LIMITS });
  const probe = workload.plan.filter((p) => moved.includes(p.location)).slice(0, 20);
  expect(probe.length).toBeGreaterThan(0);

  const pausedAt = Date.now();
  victim.pause();
  try {
    // The coordinator moves each of its locations once the lease is over (locate drives it).
    await waitFor(
      "every location of the paused server to be answered by another server",
      async () => {
        const now = await locateAll(cluster, moved);
        return [...now.values()].every((a) => "server" in a && !("code" in a) && a.server !== victimId);
      },
      RECOVERY_WAIT_MS,
      200,
    );
    await workload.waitForAcks({ locations: moved, since: Date.now(), count: 1 }, RECOVERY_WAIT_MS);

    // A write acknowledged at the new owner after the move, that a stale read would not show.
    const fresh = await Promise.all(
      probe.map(async (p) => {
        const value = `fresh ${p.location}`;
        if (p.kind === "stream") return `${(await reader.stream(p.location).append({ value: enc.encode(value) }, { msgId: value, ack: "object" })).seq}=${value}`;
        await reader.kv(p.location).set("fresh", enc.encode(value), { ack: "object" });
        return `fresh=${value}`;
      }),
    );
    workload.noteExternal(probe.map((p) => [p.location, `fresh ${p.location}`]));

    // Queue requests at the stopped server (sent after the fresh writes were acknowledged): it
    // finds them when it wakes.
    const staleWrite = (p: (typeof probe)[number], tag: string) =>
      outcome(
        p.kind === "stream"
          ? direct.stream(p.location).append({ value: enc.encode(`${tag} ${p.location}`) }, { msgId: `${tag} ${p.location}` })
          : direct.kv(p.location).set(tag, enc.encode(`${tag} ${p.location}`)),
      );
    const queuedWrites = probe.map((p) => staleWrite(p, "stale-queued"));
    const queuedReads = probe.map((p) => outcome(readAll(direct, p.location, p.kind)));

    victim.resume();
    const writes = await Promise.all(queuedWrites);
    const reads = await Promise.all(queuedReads);
    // Asked again once awake.
    const lateWrites = await Promise.all(probe.map((p) => staleWrite(p, "stale-late")));
    const lateReads = await Promise.all(probe.map((p) => outcome(readAll(direct, p.location, p.kind))));

    expect(writes.filter((w) => w.ok), "writes the paused server acknowledged for moved locations").toEqual([]);
    expect(lateWrites.filter((w) => w.ok), "writes the woken server acknowledged for moved locations").toEqual([]);
    for (const w of [...writes, ...lateWrites]) expect(["UNAVAILABLE", "TIMEOUT"]).toContain((w as { code: string }).code);

    // Every read was sent after the fresh write was acknowledged at the new owner: a read the
    // old owner answers must show it, or it is stale.
    for (const [i, p] of probe.entries()) {
      for (const r of [reads[i]!, lateReads[i]!]) {
        if (r.ok) expect(r.value as string[], `stale read of ${p.location} from the old owner`).toContain(fresh[i]);
        else expect(["UNAVAILABLE", "TIMEOUT"]).toContain(r.code);
      }
    }
    expect(victim.running, "the woken server keeps running").toBe(true);

    await workload.waitForAcks({ locations: moved, since: Date.now(), count: 1 }, RECOVERY_WAIT_MS);
    const kills = [{ at: pausedAt, locations: moved }];
    const a = await run.finish(kills);
    expectSafe(a);
    expectLocalLossBounded(a, kills);
    // Its late uploads never become part of a location: nothing sent to it while stopped is stored.
    for (const p of probe) expect((await readAll(reader, p.location, p.kind)).filter((v) => v.includes("stale-"))).toEqual([]);
    // Nothing it acknowledged and never shipped is dropped silently: every location that lost a
    // local ack of it is in its quarantine (strata stat reads it from the stopped server's index).
    await victim.stop();
    const stat = await cluster.cli(["stat", "--data", join(cluster.dir, victimId), "--json"], { withNats: false });
    expect(stat.code, stat.stderr).toBe(0);
    const quarantined = new Set((JSON.parse(stat.stdout) as { quarantine: Array<{ location: string }> }).quarantine.map((q) => q.location));
    const lostHere = new Set(a.localLost.filter((l) => moved.includes(l.location)).map((l) => l.location));
    for (const location of lostHere) expect(quarantined.has(location), `${location} lost a local ack and is not quarantined`).toBe(true);
    console.log(`[failover] quarantine of the paused server: ${quarantined.size} locations; ${lostHere.size} of them lost a local ack`);
  } finally {
    if (victim.paused) victim.resume();
  }
}, FAILOVER_TEST_MS);

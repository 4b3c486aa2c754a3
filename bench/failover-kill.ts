/**
 * The kill part of the failover benchmark (bench/failover.ts): a cluster of real processes
 * (src/testing/cluster.ts: nats-server, coordinator, servers through bench/failover-server-child.ts,
 * one `dir:` tier) in which server s<i+1> holds `sizes[i]` locations, each written once. Then, kill
 * after kill, alternating the victims: write to a few fresh locations of the victim with
 * `ack: "object"` (so its current incarnation holds them and their history is in the object
 * store), SIGKILL it by PID, and time from the signal to the first successful write (default ack,
 * with a msgId, by a client with default limits that still has the victim cached, calling again
 * with the same msgId if a call runs out of its budget, as an application would) of each of those
 * locations at its new owner; then start the victim again (same id and data) for its next turn.
 *
 * The holdings are made fast and without the coordinator's new-location rate limits: before any
 * process starts, the coordinator's LMDB state is written directly (coordinator-state.ts) with
 * every location assigned to its server, bound to no incarnation yet; the first write of each makes
 * the server claim it, as for any location it was given.
 *
 * Takeover reads are counted by the new owners themselves (`stats().takeover`, asked over IPC
 * before and after each kill): checkpoint and segment bytes their importers fetched.
 */
import { DEFAULT_COORDINATOR_LIMITS } from "../src/limits.js";
import { CoordinatorState } from "../src/net/coord/coordinator-state.js";
import { created } from "../src/net/coord/location-rules.js";
import { StrataError } from "../src/errors.js";
import type { StrataClient } from "../src/net/client/client.js";
import { startCluster, type Cluster, type Proc } from "../src/testing/cluster.js";
import { runInFlight } from "./lib/load.js";
import { prng } from "./lib/stats.js";

export interface KillParams {
  /** `--lease-ms` of the coordinator (renew and margin follow as lease/5). */
  leaseMs: number;
  /** Seal interval of every server. */
  sealIntervalMs: number;
  /** Locations held by each victim (one victim per entry: s1, s2, …); two spare servers more. */
  sizes: number[];
  /** Kills of each victim per run. */
  killsPerSize: number;
  /** Fresh locations of the victim written before, and timed after, each kill. */
  samplesPerKill: number;
  /** Writes in flight while giving every location its first record. */
  populateInFlight: number;
  valueBytes: number;
}

export interface KillSample {
  victim: string;
  locations: number;
  /** SIGKILL to the write's acknowledgement at the new owner, per location written. */
  recoveryMs: number[];
  /** Summed over the new owners: what their takeovers read from the object store. */
  takeover: { imports: number; bytesRead: number; checkpointsRead: number; segmentsRead: number };
}

export interface KillRun {
  populateSeconds: number;
  kills: KillSample[];
}

interface TakeoverCounters {
  imports: number;
  bytesRead: number;
  checkpointsRead: number;
  segmentsRead: number;
}

const ZERO: TakeoverCounters = { imports: 0, bytesRead: 0, checkpointsRead: 0, segmentsRead: 0 };
/** Budget of the clients that fill the cluster and write before the kills (not timed). */
const SETUP_TIMEOUT_MS = 60_000;
/** Calls of one timed write (each with the client's default budget) before the bench gives up. */
const APP_ATTEMPTS = 6;
const SERVER_SCRIPT = "bench/failover-server-child.ts";
const ASSIGN_BATCH = 20_000;

export function locationOf(victim: number, j: number): string {
  return `fb/v${victim}/${j}`;
}

/** Writes the coordinator's state: every server known, victim i's locations assigned to it. */
async function assignHoldings(coordinatorDir: string, serverIds: string[], sizes: number[]): Promise<void> {
  const l = DEFAULT_COORDINATOR_LIMITS;
  const state = CoordinatorState.open(coordinatorDir, { serversMax: l.serversMax, pendingChangesMax: l.pendingAssignmentsMax, now: Date.now });
  try {
    for (const id of serverIds) await state.register({ id, startedAt: 0, load: {} }, () => undefined);
    for (const [i, size] of sizes.entries()) {
      for (let from = 0; from < size; from += ASSIGN_BATCH) {
        const to = Math.min(size, from + ASSIGN_BATCH);
        await state.change([], (tx) => {
          for (let j = from; j < to; j++) tx.put(locationOf(i, j), created(serverIds[i]!));
        });
      }
    }
  } finally {
    await state.close();
  }
}

async function takeoverOf(p: Proc): Promise<TakeoverCounters> {
  const reply = await p.request({ type: "stats" });
  const t = (reply.stats as { takeover?: TakeoverCounters }).takeover;
  return t ? { imports: t.imports, bytesRead: t.bytesRead, checkpointsRead: t.checkpointsRead, segmentsRead: t.segmentsRead } : ZERO;
}

async function takeoverSum(procs: Proc[]): Promise<TakeoverCounters> {
  const all = await Promise.all(procs.map(takeoverOf));
  return all.reduce((a, b) => ({ imports: a.imports + b.imports, bytesRead: a.bytesRead + b.bytesRead, checkpointsRead: a.checkpointsRead + b.checkpointsRead, segmentsRead: a.segmentsRead + b.segmentsRead }), ZERO);
}

/** One run: a fresh cluster, the holdings written, `killsPerSize` kills of each victim, alternating. */
export async function runKills(p: KillParams, seed: number, progress: (line: string) => void): Promise<KillRun> {
  const serverIds = Array.from({ length: p.sizes.length + 2 }, (_, k) => `s${k + 1}`);
  const cluster = await startCluster({
    servers: serverIds.length,
    leaseMs: p.leaseMs,
    sealIntervalMs: p.sealIntervalMs,
    serverScript: SERVER_SCRIPT,
    prepare: ({ coordinatorDir }) => assignHoldings(coordinatorDir, serverIds, p.sizes),
  });
  try {
    return await killAll(cluster, p, seed, progress);
  } catch (err) {
    throw new Error(`${(err as Error).message}\n${cluster.diagnostics()}`, { cause: err });
  } finally {
    await cluster.stop();
  }
}

async function killAll(cluster: Cluster, p: KillParams, seed: number, progress: (line: string) => void): Promise<KillRun> {
  const value = new Uint8Array(p.valueBytes).fill(0x61);
  const loaders = await Promise.all([0, 1].map(() => cluster.client({ timeoutMs: SETUP_TIMEOUT_MS })));
  const all: string[] = p.sizes.flatMap((size, i) => Array.from({ length: size }, (_, j) => locationOf(i, j)));
  progress(`failover: giving ${all.length} locations their first record (${p.sizes.join(" + ")})`);
  const populateMs = await runInFlight(p.populateInFlight, all.length, (k) => loaders[k % 2]!.stream(all[k]!).append({ value }));

  // Fresh locations for each kill, in a shuffled order per victim (never one that moved already).
  const random = prng(seed);
  const order = p.sizes.map((size) => shuffled(size, random));
  // The timed writes use the client's defaults (budget timeoutMs, a third of it per attempt).
  const writer = await cluster.client();
  const setup = await cluster.client({ timeoutMs: SETUP_TIMEOUT_MS });
  const kills: KillSample[] = [];
  for (let k = 0; k < p.killsPerSize; k++) {
    for (const [i, size] of p.sizes.entries()) {
      const victim = cluster.servers[i]!;
      const locations = order[i]!.splice(0, p.samplesPerKill).map((j) => locationOf(i, j));
      if (locations.length < p.samplesPerKill) throw new Error(`server ${victim.name} has too few untouched locations left for ${p.samplesPerKill} samples`);
      kills.push(await killOnce(cluster, writer, setup, victim, size, locations, value, `${k}`));
      const last = kills[kills.length - 1]!;
      progress(`failover: kill ${k + 1}/${p.killsPerSize} of ${victim.name} (${size} locations): ${last.recoveryMs.map((ms) => Math.round(ms)).join(", ")} ms; takeover read ${last.takeover.bytesRead} bytes`);
    }
  }
  return { populateSeconds: populateMs / 1000, kills };
}

async function killOnce(cluster: Cluster, writer: StrataClient, setup: StrataClient, victim: Proc, size: number, locations: string[], value: Uint8Array, round: string): Promise<KillSample> {
  // The victim's current incarnation holds them, and their history is in the object store. The
  // timed client reads them too, so it has the victim cached as their owner, as a user would.
  await Promise.all(locations.map((loc) => setup.stream(loc).append({ value }, { ack: "object", msgId: `${loc}#before${round}` })));
  await Promise.all(locations.map((loc) => writer.stream(loc).get(1)));
  for (const loc of locations) {
    const a = await cluster.locate(loc);
    if (!("server" in a) || a.server !== victim.name) throw new Error(`${loc} should be held by ${victim.name} before the kill, the coordinator says ${JSON.stringify(a)}`);
  }
  const others = cluster.servers.filter((s) => s !== victim);
  const before = await takeoverSum(others);
  const killedAt = performance.now();
  await victim.kill9();
  const recoveryMs = await Promise.all(
    locations.map(async (loc) => {
      // As an application would: the same msgId again after a call that ran out of its budget.
      for (let attempt = 1; ; attempt++) {
        try {
          await writer.stream(loc).append({ value }, { msgId: `${loc}#after${round}` });
          return performance.now() - killedAt;
        } catch (err) {
          if (!StrataError.is(err) || !err.retryable || attempt >= APP_ATTEMPTS) throw err;
        }
      }
    }),
  );
  for (const loc of locations) {
    const a = await cluster.locate(loc);
    if (!("server" in a) || a.server === victim.name) throw new Error(`${loc} should have moved away from ${victim.name}, the coordinator says ${JSON.stringify(a)}`);
  }
  const after = await takeoverSum(others);
  await victim.restart();
  return {
    victim: victim.name,
    locations: size,
    recoveryMs,
    takeover: {
      imports: after.imports - before.imports,
      bytesRead: after.bytesRead - before.bytesRead,
      checkpointsRead: after.checkpointsRead - before.checkpointsRead,
      segmentsRead: after.segmentsRead - before.segmentsRead,
    },
  };
}

function shuffled(n: number, random: () => number): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

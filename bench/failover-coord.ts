/**
 * The coordinator part of the failover benchmark (bench/failover.ts): a coordinator process
 * (`strata coordinator`, src/testing/process.ts) on a state that already holds `assignments`
 * assigned locations, written directly through coordinator-state.ts before the process starts
 * (spread over `servers` server ids, as a running system would have them). Measured per run:
 * - restart: from spawning the process (after a kill -9 of the previous one, from the second run
 *   on) to the first answered locate of a known location, asked every few ms from the moment of
 *   the spawn; beside it the same for an empty state, which is what starting node and the CLI costs;
 * - locate throughput: locates of random known locations, `inFlight` outstanding, over one
 *   connection, each answer checked.
 * The coordinator runs with a long lease so the server ids, none of which runs, stay live
 * throughout (after a restart every known server counts as renewed at the start): every locate
 * is the fast path a client meets, never a move.
 */
import { connect, type NatsConnection } from "nats";
import { DEFAULT_COORDINATOR_LIMITS } from "../src/limits.js";
import { CoordinatorState } from "../src/net/coord/coordinator-state.js";
import { created } from "../src/net/coord/location-rules.js";
import { decodeUntrusted, encode, isPlainMap } from "../src/net/wire/wire-codec.js";
import { startNatsServer } from "../src/testing/nats-server.js";
import { StrataProcess } from "../src/testing/process.js";
import { makeTempDir, removeDir } from "./lib/fs.js";
import { runInFlight } from "./lib/load.js";
import { prng } from "./lib/stats.js";

export interface CoordParams {
  assignments: number;
  servers: number;
  locates: number;
  inFlight: number;
  /** The coordinator's lease while measuring (long: the servers it knows run nowhere). */
  leaseMs: number;
}

export interface CoordRun {
  restartMs: number;
  restartEmptyMs: number;
  /** Spawn to the "coordinator ready" line (1M state) — the process's own view of its start. */
  readyLogMs: number;
  locatesPerSec: number;
}

const PREFIX = "strata";
const ASSIGN_BATCH = 20_000;
const FIRST_ANSWER_TIMEOUT_MS = 60_000;

export function coordLocation(i: number): string {
  return `fc/${i % 997}/${i}`;
}

/** Writes `n` assignments over `servers` server ids; resolves to the seconds it took. */
export async function writeAssignments(dir: string, n: number, servers: number): Promise<number> {
  const started = performance.now();
  const l = DEFAULT_COORDINATOR_LIMITS;
  const state = CoordinatorState.open(dir, { serversMax: l.serversMax, pendingChangesMax: l.pendingAssignmentsMax, now: Date.now });
  try {
    const ids = Array.from({ length: servers }, (_, k) => `c${k + 1}`);
    for (const id of ids) await state.register({ id, startedAt: 0, load: {} }, () => undefined);
    for (let from = 0; from < n; from += ASSIGN_BATCH) {
      const to = Math.min(n, from + ASSIGN_BATCH);
      await state.change([], (tx) => {
        for (let i = from; i < to; i++) tx.put(coordLocation(i), created(ids[i % servers]!));
      });
    }
    if (state.assignmentCount() !== n) throw new Error(`wrote ${n} assignments, the state counts ${state.assignmentCount()}`);
  } finally {
    await state.close();
  }
  return (performance.now() - started) / 1000;
}

/** One locate; resolves to the answer's server, or the error code of a coded refusal. */
async function locate(nc: NatsConnection, location: string, timeoutMs: number): Promise<{ server?: string; code?: string }> {
  const msg = await nc.request(`${PREFIX}.coord.locate`, encode({ location }), { timeout: timeoutMs });
  const code = msg.headers?.get("Strata-Error");
  if (code) return { code };
  const body = decodeUntrusted(msg.data, "locate reply");
  if (!isPlainMap(body) || typeof body.server !== "string") throw new Error(`malformed locate reply: ${JSON.stringify(body)}`);
  return { server: body.server };
}

/**
 * Spawns the coordinator on `dir` and asks `location` every few ms until one answer comes;
 * resolves with the ms from the spawn to that answer and to the ready line.
 */
async function startAndTime(proc: StrataProcess, nc: NatsConnection, location: string, wantServer: boolean): Promise<{ answerMs: number; readyMs: number }> {
  const t0 = performance.now();
  let readyMs = NaN;
  let failed: unknown;
  const ready = proc.start().then(
    () => void (readyMs = performance.now() - t0),
    (err: unknown) => void (failed = err),
  );
  for (;;) {
    if (failed !== undefined) throw failed;
    if (performance.now() - t0 > FIRST_ANSWER_TIMEOUT_MS) throw new Error(`the coordinator answered no locate within ${FIRST_ANSWER_TIMEOUT_MS} ms:\n${proc.output()}`);
    let a: { server?: string; code?: string };
    try {
      a = await locate(nc, location, 500);
    } catch {
      // No responders yet (the process is still starting): ask again shortly.
      await new Promise((resolve) => setTimeout(resolve, 2));
      continue;
    }
    if (wantServer && a.server === undefined) throw new Error(`locate of a known location answered ${a.code} after the restart`);
    const answerMs = performance.now() - t0;
    await ready;
    if (failed !== undefined) throw failed;
    return { answerMs, readyMs };
  }
}

/** Every run: restart on the big state, throughput, then an empty state's start; `runs` of them. */
export async function runCoordinator(p: CoordParams, runs: number, parent: string | undefined, progress: (line: string) => void): Promise<{ writeSeconds: number; runs: CoordRun[] }> {
  const nats = await startNatsServer();
  const dir = makeTempDir("strata-bench-coord", parent);
  const procs: StrataProcess[] = [];
  let nc: NatsConnection | undefined;
  try {
    progress(`coordinator: writing ${p.assignments} assignments`);
    const writeSeconds = await writeAssignments(`${dir}/big`, p.assignments, p.servers);
    nc = await connect({ servers: nats.url });
    const args = (data: string) => ["coordinator", "--data", data, "--nats", nats.url, "--prefix", PREFIX, "--lease-ms", String(p.leaseMs)];
    const big = new StrataProcess("coordinator", args(`${dir}/big`), /coordinator ready/);
    procs.push(big);
    const random = prng(0xc0ffee);
    const out: CoordRun[] = [];
    for (let r = 0; r < runs; r++) {
      const started = await startAndTime(big, nc, coordLocation(Math.floor(random() * p.assignments)), true);
      const conn = nc;
      const ms = await runInFlight(p.inFlight, p.locates, async () => {
        const a = await locate(conn, coordLocation(Math.floor(random() * p.assignments)), 10_000);
        if (a.server === undefined) throw new Error(`locate of a known location was refused: ${a.code}`);
      });
      await big.kill9();
      const empty = new StrataProcess("coordinator-empty", args(`${dir}/empty-${r}`), /coordinator ready/);
      procs.push(empty);
      const baseline = await startAndTime(empty, nc, coordLocation(0), false);
      await empty.kill9();
      out.push({ restartMs: started.answerMs, restartEmptyMs: baseline.answerMs, readyLogMs: started.readyMs, locatesPerSec: (p.locates * 1000) / ms });
      progress(`coordinator: run ${r + 1}/${runs}: restart ${Math.round(started.answerMs)} ms (empty ${Math.round(baseline.answerMs)} ms), ${Math.round(out[r]!.locatesPerSec)} locates/s`);
    }
    return { writeSeconds, runs: out };
  } finally {
    for (const proc of procs) await proc.kill9().catch(() => undefined);
    await nc?.close().catch(() => undefined);
    await nats.stop();
    removeDir(dir);
  }
}

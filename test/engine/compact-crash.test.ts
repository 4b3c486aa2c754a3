/**
 * Compaction under kill -9 (docs/compaction.md: "crash-safe at every point"): a child process
 * (compact-crash-child.ts) overwrites and deletes kv keys while compactions run in the background,
 * in an explicit loop, or both; the test SIGKILLs it at a random moment (after some acknowledged
 * writes, or right after it reports a given compaction phase), reopens the data directory here and
 * checks:
 * - every key holds its last acknowledged value (same bytes, same revision), or the value of the
 *   one write issued after that ack (durable but never acknowledged); a key whose last
 *   acknowledged write is a delete is absent unless that later write is a set;
 * - the segment files are accounted for after the open (./compact-files.ts): no orphan output or
 *   marker of a compaction the kill cut short, no half-written file, no output without its marker;
 * - `strata stat` (src/data-stat.ts) of the stopped directory finds no segment missing.
 * Rounds run on the same directory with a fixed seed sequence, so each recovery also recovers
 * from the compactions and recoveries before it.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { dataStat } from "../../src/data-stat.js";
import { mulberry32 } from "../../src/random.js";
import { Store } from "../../src/store.js";
import { COMPACTED_BASE, segmentFileProblems, segsOf } from "./compact-files.js";
import { COMPACT_CRASH_LIMITS, KEYS, KV, keyName, sha256, type Line, type Mode } from "./compact-crash-child.js";

const CHILD = fileURLToPath(new URL("./compact-crash-child.ts", import.meta.url));
const REPO = fileURLToPath(new URL("../..", import.meta.url));
const SEED = Number(process.env.STRATA_COMPACT_CRASH_SEED ?? 0x5eed_c0de);
const ROUNDS = 8;
/** A round's child is killed after this long at the latest. */
const KILL_BY_MS = 4000;
const STARTUP_MS = 60_000;

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

/** What a key must hold: its last acknowledged state, or the write issued after it. */
interface KeyTruth {
  /** sha of the value, or null when deleted/absent. */
  acked: string | null;
  rev?: number;
  /** The write issued after the last ack (sha, or null for a delete), if any. */
  pending?: string | null;
}

type Kill = { after: "acks"; n: number } | { after: "phase"; phase: string; n: number };

/** Runs the child until the kill condition, then SIGKILLs it; returns every line it printed. */
async function runAndKill(dir: string, seed: number, mode: Mode, kill: Kill): Promise<{ lines: Line[]; killedIn?: string }> {
  const child = spawn(process.execPath, ["--import", "tsx", CHILD, dir, String(seed), mode], { cwd: REPO, stdio: ["ignore", "pipe", "pipe"] });
  const pid = child.pid!;
  expect(pid).toBeTypeOf("number");
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
  const lines: Line[] = [];
  let ready = false;
  let killed = false;
  let acks = 0;
  let phases = 0;
  /** The compaction phase last reported and not yet finished when the kill was sent. */
  let inPhase: string | undefined;
  let killedIn: string | undefined;
  // Bounded: a child that never reaches the condition is killed anyway after this many lines or
  // this long (the round still checks everything; `killedIn` says where the kill landed).
  const maxLines = 50_000;
  const killNow = () => {
    if (!killed) {
      killed = true;
      killedIn = inPhase;
      process.kill(pid, "SIGKILL");
    }
  };
  // The kill deadline counts from the child's "ready" (its start-up on a loaded machine is not
  // part of the round); a child that never gets ready is killed after STARTUP_MS and fails below.
  let deadline = setTimeout(killNow, STARTUP_MS);
  try {
    for await (const text of readline.createInterface({ input: child.stdout })) {
      if (text === "ready") {
        ready = true;
        clearTimeout(deadline);
        deadline = setTimeout(killNow, KILL_BY_MS);
        continue;
      }
      const line = JSON.parse(text) as Line;
      lines.push(line);
      if (line.t === "a") acks++;
      if (line.t === "p") inPhase = line.phase;
      if (line.t === "c") inPhase = undefined;
      if (killed) continue;
      const due = kill.after === "acks" ? acks >= kill.n : line.t === "p" && line.phase === kill.phase && ++phases >= kill.n;
      if (due || lines.length >= maxLines) {
        killed = true;
        killedIn = inPhase;
        process.kill(pid, "SIGKILL");
      }
    }
  } finally {
    clearTimeout(deadline);
    // Whatever failed above, the child does not outlive the round.
    if (!killed && child.exitCode === null) process.kill(pid, "SIGKILL");
  }
  const exit = await exited;
  expect(ready, `child never got ready: ${stderr}`).toBe(true);
  expect(exit, `child died on its own (seed ${seed}): ${stderr}`).toEqual({ code: null, signal: "SIGKILL" });
  return { lines, ...(killedIn ? { killedIn } : {}) };
}

/** The truth per key after the child's lines, on top of what was verified before. */
function advance(truth: Map<string, KeyTruth>, lines: Line[]): void {
  for (const l of lines) {
    if (l.t === "i") {
      const t = truth.get(l.key) ?? { acked: null };
      t.pending = l.del ? null : l.sha!;
      truth.set(l.key, t);
    } else if (l.t === "a") {
      truth.set(l.key, { acked: l.del ? null : l.sha!, rev: l.rev });
    }
  }
}

/** Checks every key against its truth, and replaces the truth by what the store holds. */
async function verify(store: Store, truth: Map<string, KeyTruth>, ctx: string): Promise<void> {
  let present = 0;
  for (let i = 0; i < KEYS; i++) {
    const key = keyName(i);
    const t = truth.get(key) ?? { acked: null };
    const e = await store.kv(KV).get(key);
    const got = e === undefined ? null : sha256(e.value);
    if (e) present++;
    const allowed = [t.acked, ...(t.pending !== undefined ? [t.pending] : [])];
    expect(allowed, `${ctx}: key ${key} holds ${got === null ? "nothing" : `a value (rev ${e!.revision})`}, acked ${t.acked === null ? "absent" : `rev ${t.rev}`}`).toContain(got);
    if (got !== null && got === t.acked && t.pending !== t.acked && t.rev !== undefined) expect(e!.revision, `${ctx}: key ${key} revision`).toBe(t.rev);
    truth.set(key, got === null ? { acked: null } : { acked: got, rev: e!.revision });
  }
  expect(store.inventory(KV).count, `${ctx}: key count`).toBe(present);
}

async function open(dir: string): Promise<Store> {
  return Store.open({ dir, limits: COMPACT_CRASH_LIMITS, sweepTimers: false, compaction: false });
}

describe("compaction under kill -9", () => {
  it(`keeps every acknowledged write and leaves no half state across ${ROUNDS} kills during compactions`, async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "strata-compact-crash-"));
    dirs.push(dir);
    const rand = mulberry32(SEED);
    const truth = new Map<string, KeyTruth>();
    const modes: Mode[] = ["explicit", "both", "background", "explicit"];
    // ("write" is reported per 256 KiB of input: rarely with these small segments.)
    const phases = ["scan", "switch", "reclaim"];
    let killedDuringCompaction = 0;
    let switches = 0;
    let outputsSeen = 0;
    for (let round = 1; round <= ROUNDS; round++) {
      const mode = modes[round % modes.length]!;
      const kill: Kill =
        mode === "background" || rand() < 0.3
          ? { after: "acks", n: 200 + Math.floor(rand() * 2000) }
          : { after: "phase", phase: phases[Math.floor(rand() * phases.length)]!, n: 1 + Math.floor(rand() * 6) };
      const ctx = `round ${round} (seed ${SEED}, ${mode}, kill ${JSON.stringify(kill)})`;
      const { lines, killedIn } = await runAndKill(dir, Math.floor(rand() * 2 ** 32), mode, kill);
      if (killedIn) killedDuringCompaction++;
      switches += lines.filter((l) => l.t === "p" && l.phase === "switch").length;
      advance(truth, lines);
      if (process.env.STRATA_COMPACT_CRASH_DUMP) fs.writeFileSync(`${process.env.STRATA_COMPACT_CRASH_DUMP}-${round}.jsonl`, lines.map((l) => JSON.stringify(l)).join("\n"));
      const store = await open(dir);
      try {
        const segs = segsOf(store.index.segs);
        outputsSeen += [...segs.keys()].filter((id) => id >= COMPACTED_BASE).length;
        expect(segmentFileProblems(path.join(dir, "segments"), segs), ctx).toEqual([]);
        // A switch the kill cut short (chunked: compactSwitchChunkRecords) was finished by the open.
        expect([...segs].filter(([, i]) => i.state === "switching"), `${ctx}: outputs left switching`).toEqual([]);
        const r = store.recovery;
        const summary = { rebuilt: r.rebuilt, reason: r.rebuildReason, replayed: r.replayed, cut: r.cut?.bytes, segments: r.segments.length, superseded: r.superseded.length, orphans: r.orphans.length, unknownKept: r.unknownOutputsKept.length, tmp: r.tempOutputsRemoved };
        await verify(store, truth, `${ctx} after an open that found ${JSON.stringify(summary)}`);
      } finally {
        await store.close();
      }
      const stat = await dataStat(dir);
      expect(stat.segments.missing.count, `${ctx}: strata stat finds segments missing`).toBe(0);
    }
    // The kills did land in compactions, and compactions did switch outputs in.
    expect(killedDuringCompaction, "kills in the middle of a compaction").toBeGreaterThanOrEqual(3);
    expect(switches, "compactions that reached their switch").toBeGreaterThan(0);
    expect(outputsSeen, "compaction outputs found in the index after a kill").toBeGreaterThan(0);
  }, 120_000);
});

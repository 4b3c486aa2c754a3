/**
 * A real crash test: a child process (crash-child.ts) writes concurrently to a few streams and a
 * kv, printing each acknowledged write; the test kills it with SIGKILL at a random moment, reopens
 * the data directory here and checks that every acknowledged write is readable with exactly its
 * bytes, that the recovery report is consistent with the files, and that writing continues where
 * the log left off. Rounds run on the same directory, so recovery also recovers from recoveries.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { segmentPath } from "../../src/log/segment-files.js";
import { Store } from "../../src/store.js";
import { CRASH_KV, CRASH_LIMITS, CRASH_STREAMS, prng, sha256, type Ack } from "./crash-child.js";

const CHILD = fileURLToPath(new URL("./crash-child.ts", import.meta.url));
const REPO = fileURLToPath(new URL("../..", import.meta.url));

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), "strata-crash-"));
  dirs.push(d);
  return d;
}

/** Runs the child until `killAfter` writes are acknowledged, then SIGKILLs it; returns every ack it printed. */
async function runAndKill(dir: string, runId: number, seed: number, killAfter: number): Promise<Ack[]> {
  const child = spawn(process.execPath, ["--import", "tsx", CHILD, dir, String(runId), String(seed)], {
    cwd: REPO,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const pid = child.pid;
  expect(pid).toBeTypeOf("number");
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on("exit", (code, signal) => resolve({ code, signal })),
  );
  const acks: Ack[] = [];
  let killed = false;
  let ready = false;
  for await (const line of readline.createInterface({ input: child.stdout })) {
    if (line === "ready") {
      ready = true;
      continue;
    }
    acks.push(JSON.parse(line) as Ack);
    if (!killed && acks.length >= killAfter) {
      killed = true;
      process.kill(pid!, "SIGKILL");
    }
  }
  const exit = await exited;
  expect(ready, `child never got ready: ${stderr}`).toBe(true);
  expect(exit, `child died on its own (seed ${seed}): ${stderr}`).toEqual({ code: null, signal: "SIGKILL" });
  return acks;
}

/** Everything acknowledged is there, byte for byte, and the locations are internally consistent. */
async function verify(store: Store, acks: Ack[], ctx: string): Promise<void> {
  for (const a of acks) {
    if (a.t === "s") {
      const m = await store.stream(a.loc).get(a.seq);
      expect(m, `${ctx}: ${a.loc} seq ${a.seq} lost`).toBeDefined();
      expect(m!.value.byteLength, `${ctx}: ${a.loc} seq ${a.seq}`).toBe(a.len);
      expect(sha256(m!.value), `${ctx}: ${a.loc} seq ${a.seq}`).toBe(a.sha);
      expect(a.rev, "only appends: revision equals seq").toBe(a.seq);
    } else {
      const e = await store.kv(a.loc).get(a.key);
      expect(e, `${ctx}: key ${a.key} lost`).toBeDefined();
      expect(e!.revision).toBe(a.rev);
      expect(e!.value.byteLength).toBe(a.len);
      expect(sha256(e!.value), `${ctx}: key ${a.key}`).toBe(a.sha);
    }
  }
  for (const loc of CRASH_STREAMS) {
    const inv = store.inventory(loc);
    const acked = acks.filter((a) => a.t === "s" && a.loc === loc).map((a) => (a as { seq: number }).seq);
    expect(inv.lastSeq).toBeGreaterThanOrEqual(Math.max(0, ...acked));
    // Appends only: seqs are 1..lastSeq without a hole, also for writes durable but never acknowledged.
    expect(inv.count).toBe(inv.lastSeq);
    expect(inv.revision).toBe(inv.lastSeq);
    let expected = 1;
    for await (const m of store.stream(loc).getAll()) expect(m.seq).toBe(expected++);
    expect(expected - 1).toBe(inv.lastSeq);
  }
  const kvInv = store.inventory(CRASH_KV);
  let keys = 0;
  for await (const e of store.kv(CRASH_KV).getAll()) {
    expect(e.revision).toBeLessThanOrEqual(kvInv.revision);
    keys++;
  }
  expect(kvInv.count).toBe(keys);
  expect(keys).toBeGreaterThanOrEqual(acks.filter((a) => a.t === "k").length);
}

function checkRecoveryReport(store: Store, dir: string): void {
  const r = store.recovery;
  expect(r.rebuilt, "a crash does not invalidate the index").toBe(false);
  expect(r.active).toBeDefined();
  const active = r.active!;
  if (r.cut) {
    expect(r.cut.seg).toBe(active.id);
    expect(r.cut.off).toBe(active.size);
    expect(r.cut.bytes).toBeGreaterThan(0);
  }
  // The active segment's records end exactly where recovery says the valid log ends; after that
  // there is nothing but its zero tail (a pre-zeroed segment), if anything.
  const activeBytes = fs.readFileSync(segmentPath(path.join(dir, "segments"), active.id));
  expect(activeBytes.byteLength).toBeGreaterThanOrEqual(active.size);
  expect(activeBytes.subarray(active.size).every((b) => b === 0)).toBe(true);
  // The index is updated right after each group commit's fsync, so only the records of the batch
  // in flight can need replay: 8 writers with at most 24 chunks and one set record each.
  expect(r.replayed).toBeLessThanOrEqual(8 * 25);
}

/** Appends a frame header that promises more body bytes than follow it; returns the bytes added. */
function tearTail(dir: string, rand: () => number): number {
  const segs = path.join(dir, "segments");
  const last = fs.readdirSync(segs).filter((n) => n.endsWith(".seg")).sort().at(-1)!;
  const body = 1 + Math.floor(rand() * 4000);
  const partial = Buffer.alloc(8 + Math.floor(rand() * body));
  partial.writeUInt32BE(0xdeadbeef, 0); // CRC
  partial.writeUInt32BE(body, 4); // length
  fs.appendFileSync(path.join(segs, last), partial);
  return partial.byteLength;
}

async function open(dir: string): Promise<Store> {
  return Store.open({ dir, limits: CRASH_LIMITS, sweepTimers: false });
}

describe("crash recovery with SIGKILL", () => {
  it("keeps every acknowledged write across 5 kills at random moments", async () => {
    const dir = tempDir();
    const all: Ack[] = [];
    const seed = Date.now() >>> 0;
    const rand = prng(seed);
    let segments = 0;
    for (let round = 1; round <= 5; round++) {
      const ctx = `round ${round} of seed ${seed}`;
      const killAfter = 3 + Math.floor(rand() * 150);
      const acks = await runAndKill(dir, round, Math.floor(rand() * 2 ** 32), killAfter);
      expect(acks.length).toBeGreaterThanOrEqual(killAfter);
      all.push(...acks);
      // Odd rounds also get the torn tail a power cut could leave: the start of a frame whose
      // body never made it to disk. Nothing acknowledged can be in it.
      const torn = round % 2 === 1 ? tearTail(dir, rand) : 0;
      const store = await open(dir);
      try {
        checkRecoveryReport(store, dir);
        if (torn > 0) {
          expect(store.recovery.cut, ctx).toBeDefined();
          expect(store.recovery.cut!.bytes, ctx).toBeGreaterThanOrEqual(torn);
        }
        await verify(store, all, `${ctx}, ${acks.length} acks`);
        segments = store.recovery.active!.id;
      } finally {
        await store.close();
      }
    }
    // The workload is big enough that chunked values and segment rolls really happened.
    expect(segments).toBeGreaterThan(3);
    expect(all.some((a) => a.len > CRASH_LIMITS.chunkBytes * 16)).toBe(true);
  });

  it("continues writing after a kill: appends get lastSeq+1 and survive another reopen", async () => {
    const dir = tempDir();
    const acks = await runAndKill(dir, 1, 4242, 30);
    let store = await open(dir);
    const next: Ack[] = [];
    try {
      checkRecoveryReport(store, dir);
      await verify(store, acks, "after kill");
      for (const loc of CRASH_STREAMS) {
        const before = store.inventory(loc);
        const v = new TextEncoder().encode(`after ${loc}`);
        const r = await store.stream(loc).append({ value: v }, { expectedLastSeq: before.lastSeq });
        expect(r.seq).toBe(before.lastSeq + 1);
        expect(r.revision).toBe(before.revision + 1);
        next.push({ t: "s", loc, seq: r.seq, rev: r.revision, sha: sha256(v), len: v.byteLength });
      }
      const big = new Uint8Array(3 * CRASH_LIMITS.chunkBytes + 5).map((_, i) => i % 251);
      const kr = await store.kv(CRASH_KV).set("after/big", big);
      expect(kr.revision).toBe(store.inventory(CRASH_KV).revision);
      next.push({ t: "k", loc: CRASH_KV, key: "after/big", rev: kr.revision, sha: sha256(big), len: big.byteLength });
    } finally {
      await store.close();
    }
    store = await open(dir);
    try {
      expect(store.recovery.cut).toBeUndefined();
      expect(store.recovery.replayed).toBe(0);
      await verify(store, [...acks, ...next], "after second reopen");
    } finally {
      await store.close();
    }
  });
});

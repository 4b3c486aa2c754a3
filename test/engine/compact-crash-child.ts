/**
 * The victim of the compaction kill -9 test (compact-crash.test.ts): opens a Store on argv[2] and
 * runs a kv overwrite workload (a few hundred keys, each owned by one writer, overwritten and now
 * and then deleted) while compactions run, in the background (`compaction` on, a short interval),
 * explicitly in a loop, or both, until it is killed.
 *
 * It prints one JSON line per event, synchronously (writes to a pipe are synchronous on Linux, so
 * a printed line is never lost):
 * - `{ t: "i", key, sha|del }` BEFORE a write is issued (the intent: after a kill, a key may hold
 *   its last acknowledged value or the one write issued after it);
 * - `{ t: "a", key, rev, sha|del }` once that write is acknowledged;
 * - `{ t: "p", phase }` for a compaction's progress and `{ t: "c", runs }` when one returns, so the
 *   parent can kill it in the middle of a compaction.
 *
 * Usage: node --import tsx test/engine/compact-crash-child.ts <dir> <seed> <mode>
 */
import { createHash, randomBytes } from "node:crypto";
import { Store } from "../../src/store.js";
import { mulberry32 } from "../../src/random.js";

export const KEYS = 300;
export const WRITERS = 4;
export const KV = "cc/kv";
export const COMPACT_CRASH_LIMITS = {
  chunkBytes: 4096,
  recordBytesMax: 8192 + 4096,
  headersBytesMax: 4096,
  segmentBytesMax: 64 * 1024,
  // Compaction: every sealed segment is small (merged), runs of up to four segments, a segment a
  // candidate at 30 % dead, inputs deleted 1 ms after their switch, background passes every 20 ms.
  compactSmallBytes: 64 * 1024,
  compactRunBytesMax: 4 * 64 * 1024,
  compactDeadFractionMin: 0.3,
  compactRetainMs: 1,
  compactIntervalMs: 20,
  // Switches in chunks of 8 kept records: a kill lands between two chunks of a switch too.
  compactSwitchChunkRecords: 8,
};
export type Mode = "background" | "explicit" | "both";

export type Line =
  | { t: "i"; key: string; sha?: string; del?: true }
  | { t: "a"; key: string; rev: number; sha?: string; del?: true }
  | { t: "p"; phase: string }
  | { t: "c"; runs: number };

export function sha256(b: Uint8Array): string {
  return createHash("sha256").update(b).digest("hex");
}

export function keyName(i: number): string {
  return `k${String(i).padStart(4, "0")}`;
}

function value(rand: () => number): Uint8Array {
  const r = rand();
  // Mostly about 1 KiB; some chunked (several chunk records, whose copies compaction rewrites).
  const len = r < 0.05 ? 0 : r < 0.9 ? 512 + Math.floor(rand() * 1024) : 4096 * 2 + Math.floor(rand() * 4096 * 3);
  return randomBytes(len);
}

async function main(): Promise<void> {
  const [dir, seedText, modeText] = process.argv.slice(2);
  if (!dir || !seedText || !modeText) throw new Error("usage: compact-crash-child.ts <dir> <seed> <mode>");
  const mode = modeText as Mode;
  const rand = mulberry32(Number(seedText));
  const print = (l: Line) => process.stdout.write(`${JSON.stringify(l)}\n`);
  // Background compaction runs on the maintenance timer (sweepTimers).
  const background = mode !== "explicit";
  const store = await Store.open({ dir, limits: COMPACT_CRASH_LIMITS, sweepTimers: background, compaction: background });
  const kv = store.kv(KV);
  const writer = async (w: number) => {
    for (;;) {
      const key = keyName(w + WRITERS * Math.floor(rand() * (KEYS / WRITERS)));
      if (rand() < 0.08) {
        print({ t: "i", key, del: true });
        const r = await kv.delete(key);
        print({ t: "a", key, rev: r.revision, del: true });
      } else {
        const v = value(rand);
        const sha = sha256(v);
        print({ t: "i", key, sha });
        const r = await kv.set(key, v);
        print({ t: "a", key, rev: r.revision, sha });
      }
    }
  };
  const compactor = async () => {
    for (;;) {
      const report = await store.compact({ all: rand() < 0.7, sealActive: rand() < 0.5, onProgress: (p) => print({ t: "p", phase: p.phase }) });
      print({ t: "c", runs: report.runs });
      // Let some writes land between compactions, so each has new dead records to drop.
      await new Promise((resolve) => setTimeout(resolve, 5 + Math.floor(rand() * 20)));
    }
  };
  process.stdout.write("ready\n");
  await Promise.all([...Array.from({ length: WRITERS }, (_, w) => writer(w)), ...(mode === "background" ? [] : [compactor()])]);
}

if (process.argv[1]?.endsWith("compact-crash-child.ts")) {
  main().catch((err) => {
    process.stderr.write(`compact-crash-child failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}

/**
 * The victim of the crash test (crash.test.ts): opens a Store on argv[2] and runs concurrent
 * appends and kv sets until it is killed, printing one JSON line per ACKNOWLEDGED write. The
 * parent kills it with SIGKILL at a random moment and checks that every printed write survived.
 *
 * Usage: node --import tsx test/engine/crash-child.ts <dir> <run-id> <seed>
 * Keys are prefixed with the run id, so every kv write of every run has its own key.
 * Writes to stdout are synchronous for pipes on Linux, so a printed line is never lost.
 */
import { createHash, randomBytes } from "node:crypto";
import { Store } from "../../src/store.js";
import { mulberry32 as prng } from "../../src/random.js";
export { prng };

export const CRASH_LIMITS = {
  chunkBytes: 64 * 1024,
  recordBytesMax: 68 * 1024 + 4096,
  headersBytesMax: 4096,
  segmentBytesMax: 1024 * 1024,
};
export const CRASH_STREAMS = ["crash/s0", "crash/s1", "crash/s2"];
export const CRASH_KV = "crash/kv";

export type Ack =
  | { t: "s"; loc: string; seq: number; rev: number; sha: string; len: number }
  | { t: "k"; loc: string; key: string; rev: number; sha: string; len: number };

export function sha256(b: Uint8Array): string {
  return createHash("sha256").update(b).digest("hex");
}


function value(rand: () => number): Uint8Array {
  const r = rand();
  // Mostly 0..300 KiB (often chunked), a few over 1 MiB, some tiny or empty.
  const len = r < 0.1 ? 0 : r < 0.3 ? Math.floor(rand() * 200) : r < 0.93 ? Math.floor(rand() * 300 * 1024) : 1024 * 1024 + Math.floor(rand() * 512 * 1024);
  // Random content is cheap to make, so the child spends its time in the write path (where a
  // kill hurts) rather than in generating data. The reported hash covers every byte.
  return randomBytes(len);
}

async function main(): Promise<void> {
  const [dir, runId, seedText] = process.argv.slice(2);
  if (!dir || !runId || !seedText) throw new Error("usage: crash-child.ts <dir> <run-id> <seed>");
  const rand = prng(Number(seedText));
  const store = await Store.open({ dir, limits: CRASH_LIMITS, sweepTimers: false });
  const print = (a: Ack) => process.stdout.write(`${JSON.stringify(a)}\n`);
  let n = 0;
  const worker = async (w: number) => {
    for (;;) {
      const v = value(rand);
      if (rand() < 0.6) {
        const loc = CRASH_STREAMS[Math.floor(rand() * CRASH_STREAMS.length)]!;
        const r = await store.stream(loc).append({ value: v, headers: { w: String(w) } });
        print({ t: "s", loc, seq: r.seq, rev: r.revision, sha: sha256(v), len: v.byteLength });
      } else {
        const key = `r${runId}/w${w}/${n++}`;
        const r = await store.kv(CRASH_KV).set(key, v);
        print({ t: "k", loc: CRASH_KV, key, rev: r.revision, sha: sha256(v), len: v.byteLength });
      }
    }
  };
  process.stdout.write("ready\n");
  await Promise.all(Array.from({ length: 8 }, (_, w) => worker(w)));
}

if (process.argv[1]?.endsWith("crash-child.ts")) {
  main().catch((err) => {
    process.stderr.write(`crash-child failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}

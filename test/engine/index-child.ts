/**
 * The child of index-damage.test.ts: opens a store whose index file the parent damaged (a SIGBUS
 * or SIGSEGV there would kill vitest's worker, so it happens here), or runs a reindex the parent
 * kills. Prints one JSON line with what it saw (the store's warn-or-worse log events included).
 *
 * Usage: node --import tsx test/engine/index-child.ts open <dir>... | reindex <dir>
 * (`open` opens each directory in turn, one JSON line each: one child serves many cases.)
 */
import { Store } from "../../src/store.js";
import { captureLogger } from "../helpers/capture-logger.js";
import { all } from "../helpers/collect.js";

export const INDEX_CHILD_LIMITS = { segmentBytesMax: 64 * 1024, recordBytesMax: 8192, chunkBytes: 1024, headersBytesMax: 1024 };
export const INDEX_CHILD_STREAMS = ["d/a", "d/b"];

async function main(): Promise<void> {
  const [mode, ...dirs] = process.argv.slice(2);
  const dir = dirs[0];
  if (mode === "reindex") {
    const report = await Store.reindex({ dir: dir!, limits: INDEX_CHILD_LIMITS });
    process.stdout.write(`${JSON.stringify({ replayed: report.replayed })}\n`);
    return;
  }
  for (const d of dirs) await openOne(d);
}

async function openOne(dir: string): Promise<void> {
  const { logger, events } = captureLogger({ level: "warn" });
  const store = await Store.open({ dir, limits: INDEX_CHILD_LIMITS, sweepTimers: false, logger });
  const seqs: Record<string, number[]> = {};
  for (const loc of INDEX_CHILD_STREAMS) seqs[loc] = (await all(store.stream(loc).getAll())).map((m) => m.seq);
  const kv = await store.kv("d/kv").get("key");
  process.stdout.write(
    `${JSON.stringify({ seqs, kv: kv ? Buffer.from(kv.value).toString() : null, rebuilt: store.recovery.rebuilt, movedTo: store.recovery.damagedIndexMovedTo ?? null, events })}\n`,
  );
  await store.close();
}

if (process.argv[1]?.endsWith("index-child.ts")) await main();

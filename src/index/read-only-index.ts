/**
 * Opening a stopped server's LMDB index read-only, for `strata stat` (../cli/stat.ts).
 *
 * `Store.open` is not usable for looking at a data directory: it replays the log into the index,
 * cuts a torn tail, sweeps open chunks, lists and uploads to the object store, and writes the
 * unsynced marker; `LmdbIndex.open` drops the index checksum and may write the format key. Here
 * nothing of the data directory is changed: the file passes the same checks as before any open
 * (./index-check.ts: a damaged file is refused with CORRUPT instead of being mapped), and lmdb
 * maps it with MDB_RDONLY. LMDB itself still opens (and creates, if missing) `index.mdb-lock`,
 * its reader table, which holds no data.
 *
 * Tables are opened by the names ./lmdb-index.ts gives them, with the same (default) encodings;
 * a table an older index does not have yet (`logs`, `quarantine`) reads as empty.
 */
import fs from "node:fs";
import path from "node:path";
import { open, type Database, type RootDatabase } from "lmdb";
import { StrataError } from "../errors.js";
import { INDEX_FILE, indexFileProblem } from "./index-check.js";
import { INDEX_FORMAT, type Checkpoint, type LocMeta, type SegmentInfo } from "./lmdb-index.js";
import type { QuarantineTable } from "./quarantine.js";

export interface ReadOnlyIndex {
  /** How far of the log the index reflects (undefined: nothing yet). */
  checkpoint: Checkpoint | undefined;
  locs: Database<LocMeta, string> | undefined;
  segs: Database<SegmentInfo, number> | undefined;
  deadBytes: Database<number, number> | undefined;
  sys: Database<unknown, string> | undefined;
  logs: Database<unknown, number | string> | undefined;
  quarantine: QuarantineTable | undefined;
  close(): Promise<void>;
}

/** Whether `indexDir` holds an index file at all. */
export function indexExists(indexDir: string): boolean {
  return fs.existsSync(path.join(indexDir, INDEX_FILE));
}

/**
 * Opens the index in `indexDir` read-only. CORRUPT when its file is damaged or of another format
 * (the server rebuilds it from the log when it starts; `strata reindex` does it offline).
 */
export function openIndexReadOnly(indexDir: string): ReadOnlyIndex {
  const problem = indexFileProblem(indexDir);
  if (problem !== undefined) {
    throw new StrataError("CORRUPT", `the index at ${indexDir} is damaged (${problem}); run \`strata reindex --data DIR\` (or start the server, which rebuilds it from the log), then look again`);
  }
  let root: RootDatabase;
  try {
    root = open({ path: path.join(indexDir, INDEX_FILE), maxDbs: 16, noSubdir: true, readOnly: true });
  } catch (cause) {
    throw new StrataError("CORRUPT", `the index at ${indexDir} cannot be opened read-only (${(cause as Error).message}); run \`strata reindex --data DIR\`, then look again`, { cause });
  }
  // openDB answers undefined (read-only: nothing is created) for a table the file does not have.
  const sub = <V, K extends import("lmdb").Key>(name: string): Database<V, K> | undefined => (root.openDB<V, K>({ name, cache: false }) as Database<V, K> | null) ?? undefined;
  const sys = sub<unknown, string>("sys");
  const format = sys?.get("format");
  if (format !== undefined && format !== INDEX_FORMAT) {
    void root.close();
    throw new StrataError("CORRUPT", `the index at ${indexDir} has format ${String(format)}, this Strata reads ${INDEX_FORMAT}; start the server (it rebuilds the index from the log) or run \`strata reindex --data DIR\`, then look again`);
  }
  return {
    checkpoint: sys?.get("checkpoint") as Checkpoint | undefined,
    locs: sub("locs"),
    segs: sub("segs"),
    deadBytes: sub("deadBytes"),
    sys,
    logs: sub("logs"),
    quarantine: sub("quarantine"),
    close: () => root.close(),
  };
}

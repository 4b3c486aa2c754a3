/**
 * What `strata stat --data DIR` reports about a stopped server's data directory (./cli/stat.ts
 * prints it): segments by state with their bytes and dead bytes, locations by kind, the foreign
 * logs (servers this one imported locations from), the moved-away quarantine and the records
 * replay had to skip.
 *
 * Invariant: nothing in the data directory is changed. A `Store` is not opened (opening one
 * replays the log, cuts a torn tail, sweeps open chunks and talks to the object store); the
 * index is read read-only (./index/read-only-index.ts) and the segment files are only listed and
 * stat'ed. The data lock is held while reading, so a server cannot start meanwhile, and a data
 * directory a running process holds is refused (UNAVAILABLE) instead of being read half-written.
 * The figures are the index's as of its checkpoint; `logBytesAfterCheckpoint` says how much of
 * the log it does not reflect yet (a server that was killed replays that when it starts).
 */
import fs from "node:fs";
import path from "node:path";
import { acquireDataLock } from "./data-lock.js";
import { StrataError } from "./errors.js";
import { isForeign } from "./index/foreign-logs.js";
import type { SegmentState } from "./index/lmdb-index.js";
import { listQuarantine, type QuarantineEntry } from "./index/quarantine.js";
import { indexExists, openIndexReadOnly, type ReadOnlyIndex } from "./index/read-only-index.js";
import { unsyncedMarkerPath } from "./index/unsynced-marker.js";
import { SEGMENT_HEADER_BYTES, listSegmentIds, segmentPath } from "./log/segment-files.js";
import type { Kind } from "./types.js";

/**
 * How a segment of the own log stands. "local-only": sealed, and no tier ever recorded it (a
 * store without a tier); "missing": the index says it is on the local disk, but it is not (if the
 * object store has it, the server records it as evicted at its next start).
 */
export type SegmentStatState = "active" | Exclude<SegmentState, "active"> | "local-only" | "missing";
export const SEGMENT_STAT_STATES: readonly SegmentStatState[] = ["active", "sealed", "uploaded", "local-only", "evicted", "damaged", "missing"];

export interface Tally {
  count: number;
  /** Bytes of the segment files on the local disk (an evicted segment has none). */
  bytes: number;
  /** Bytes of records nothing references any more (index `deadBytes`). */
  deadBytes: number;
}

export interface KindTally {
  locations: number;
  /** Messages of streams, keys of kvs. */
  entries: number;
  bytes: number;
}

export interface DataStat {
  dir: string;
  index: {
    /** False when the index was not closed by a clean stop (a crash, or a server still starting). */
    closedCleanly: boolean;
    checkpoint: { seg: number; off: number } | null;
    /** Bytes of local segment files after the checkpoint: records the figures below leave out. */
    logBytesAfterCheckpoint: number;
  };
  segments: Record<SegmentStatState, Tally> & { total: Tally };
  locations: Record<Kind, KindTally> & { total: KindTally };
  /** Servers whose segments imported locations point into (index `logs`). */
  foreignLogs: Array<{ log: number; server: string }>;
  /** Locations that moved away while holding records never shipped (never served, kept). */
  quarantine: QuarantineEntry[];
  /** Records replay could not apply to the index and skips (see index/apply.ts). */
  skippedRecords: Array<{ seg: number; off: number; location: string; reason: string }>;
}

/** Reads the figures of the stopped server's data directory `dir`. */
export async function dataStat(dir: string): Promise<DataStat> {
  const indexDir = path.join(dir, "index");
  const segmentsDir = path.join(dir, "segments");
  checkDataDir(dir, indexDir, segmentsDir);
  const release = lockForReading(dir);
  try {
    const index = openIndexReadOnly(indexDir);
    try {
      return collect(dir, index, indexDir, segmentsDir);
    } finally {
      await index.close();
    }
  } finally {
    release();
  }
}

function checkDataDir(dir: string, indexDir: string, segmentsDir: string): void {
  let isDir: boolean;
  try {
    isDir = fs.statSync(dir).isDirectory();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") throw new StrataError("INVALID_ARGUMENT", `there is no data directory at ${dir}; give the --data directory of a server`);
    throw new StrataError("IO", `the data directory ${dir} cannot be read (${(err as Error).message})`, { cause: err });
  }
  if (!isDir) throw new StrataError("INVALID_ARGUMENT", `${dir} is not a directory; give the --data directory of a server`);
  const hasSegments = fs.existsSync(segmentsDir) && listSegmentIds(segmentsDir).length > 0;
  if (!indexExists(indexDir)) {
    if (!hasSegments) throw new StrataError("INVALID_ARGUMENT", `${dir} is not a Strata data directory (it has neither an index nor segments); give the --data directory of a server`);
    throw new StrataError("CORRUPT", `the data directory ${dir} has segments but no index; run \`strata reindex --data ${dir}\` (or start the server, which rebuilds it from the log), then look again`);
  }
}

function lockForReading(dir: string): () => void {
  try {
    return acquireDataLock(dir);
  } catch (err) {
    if (StrataError.is(err, "UNAVAILABLE")) {
      throw new StrataError("UNAVAILABLE", `${err.message}. strata stat reads only a stopped server's data directory: stop the server first`, { cause: err });
    }
    throw new StrataError("IO", `cannot take the lock of the data directory ${dir} (${(err as Error).message}); strata stat needs to write its LOCK file for the time it reads`, { cause: err });
  }
}

function collect(dir: string, index: ReadOnlyIndex, indexDir: string, segmentsDir: string): DataStat {
  const local = fs.existsSync(segmentsDir) ? listSegmentIds(segmentsDir) : [];
  const sizes = new Map(local.map((id) => [id, fs.statSync(segmentPath(segmentsDir, id)).size]));
  const active = local[local.length - 1];
  const checkpoint = index.checkpoint ?? null;
  return {
    dir,
    index: { closedCleanly: !fs.existsSync(unsyncedMarkerPath(indexDir)), checkpoint, logBytesAfterCheckpoint: bytesAfter(checkpoint, sizes) },
    segments: segmentTallies(index, sizes, active),
    locations: kindTallies(index),
    foreignLogs: foreignLogs(index),
    quarantine: index.quarantine ? listQuarantine(index.quarantine) : [],
    skippedRecords: skippedRecords(index),
  };
}

function bytesAfter(cp: { seg: number; off: number } | null, sizes: ReadonlyMap<number, number>): number {
  let n = 0;
  for (const [id, size] of sizes) {
    if (cp === null) n += Math.max(0, size - SEGMENT_HEADER_BYTES);
    else if (id === cp.seg) n += Math.max(0, size - cp.off);
    else if (id > cp.seg) n += Math.max(0, size - SEGMENT_HEADER_BYTES);
  }
  return n;
}

const tally = (): Tally => ({ count: 0, bytes: 0, deadBytes: 0 });

function segmentTallies(index: ReadOnlyIndex, sizes: ReadonlyMap<number, number>, active: number | undefined): DataStat["segments"] {
  const out = Object.fromEntries([...SEGMENT_STAT_STATES, "total"].map((s) => [s, tally()])) as DataStat["segments"];
  const recorded = new Map<number, string>();
  for (const { key, value } of index.segs?.getRange() ?? []) {
    if (typeof key === "number" && !isForeign(key) && typeof value?.state === "string") recorded.set(key, value.state);
  }
  const dead = new Map<number, number>();
  for (const { key, value } of index.deadBytes?.getRange() ?? []) if (typeof key === "number" && typeof value === "number") dead.set(key, value);
  for (const id of new Set([...sizes.keys(), ...recorded.keys()])) {
    const size = sizes.get(id);
    const state = stateOf(id === active, recorded.get(id), size !== undefined);
    for (const t of [out[state], out.total]) {
      t.count += 1;
      t.bytes += size ?? 0;
      t.deadBytes += dead.get(id) ?? 0;
    }
  }
  return out;
}

function stateOf(isActive: boolean, recorded: string | undefined, onDisk: boolean): SegmentStatState {
  if (isActive) return "active";
  if (recorded === "evicted") return "evicted";
  if (!onDisk) return "missing";
  if (recorded === "sealed" || recorded === "uploaded" || recorded === "damaged") return recorded;
  return "local-only";
}

const kindTally = (): KindTally => ({ locations: 0, entries: 0, bytes: 0 });

function kindTallies(index: ReadOnlyIndex): DataStat["locations"] {
  const out = { stream: kindTally(), kv: kindTally(), total: kindTally() };
  for (const { value } of index.locs?.getRange() ?? []) {
    const t = value?.kind === "stream" ? out.stream : value?.kind === "kv" ? out.kv : undefined;
    if (t === undefined) continue;
    for (const x of [t, out.total]) {
      x.locations += 1;
      x.entries += value.count;
      x.bytes += value.bytes;
    }
  }
  return out;
}

function foreignLogs(index: ReadOnlyIndex): DataStat["foreignLogs"] {
  const out: DataStat["foreignLogs"] = [];
  // Numbers map to server ids; the string keys ("id:<server>", "next") are the reverse map and the counter.
  for (const { key, value } of index.logs?.getRange() ?? []) if (typeof key === "number" && typeof value === "string") out.push({ log: key, server: value });
  return out;
}

const SKIPPED_PREFIX = "quarantine/";

function skippedRecords(index: ReadOnlyIndex): DataStat["skippedRecords"] {
  const out: DataStat["skippedRecords"] = [];
  for (const { key, value } of index.sys?.getRange({ start: SKIPPED_PREFIX, end: "quarantine0" }) ?? []) {
    const [seg, off] = key.slice(SKIPPED_PREFIX.length).split("/").map(Number);
    const v = (value ?? {}) as { loc?: unknown; reason?: unknown };
    out.push({ seg: seg ?? 0, off: off ?? 0, location: String(v.loc ?? ""), reason: String(v.reason ?? "") });
  }
  return out;
}

/**
 * What `strata stat --data DIR` reports about a stopped server's data directory (./cli/stat.ts
 * prints it): segments by state with their bytes and dead bytes (compaction inputs waiting for the
 * reclaim as "superseded"), the compaction outputs with their covers and the local orphans, live
 * and dead bytes, locations by kind, the foreign logs (servers this one imported locations from),
 * the moved-away quarantine and the records replay had to skip. Given the object store
 * (`--tier URI --id ID`), also what it holds of the server: segments and outputs as
 * ./log/segment-set.ts resolves them, compaction markers, and the takeover pins other servers put.
 *
 * Invariant: nothing in the data directory is changed. A `Store` is not opened (opening one
 * replays the log, cuts a torn tail, sweeps open chunks and talks to the object store); the
 * index is read read-only (./index/read-only-index.ts) and the segment files are only listed and
 * stat'ed. The data lock is held while reading, so a server cannot start meanwhile, and a data
 * directory a running process holds is refused (UNAVAILABLE) instead of being read half-written.
 * The figures are the index's as of its checkpoint; `logBytesAfterCheckpoint` says how much of
 * the log it does not reflect yet (a server that was killed replays that when it starts).
 * The object store is only listed, never written.
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
import { segmentRecordsEnd } from "./log/segment-end.js";
import { SEGMENT_HEADER_BYTES, listSegmentIds, segmentPath } from "./log/segment-files.js";
import { isCompacted, listLocalMarkers, resolveSegments, type Cover } from "./log/segment-set.js";
import type { ObjectStore } from "./tier/object-store.js";
import { listPins, type Pin } from "./tier/pins.js";
import { listSegments } from "./tier/tier-listing.js";
import type { Kind } from "./types.js";

/**
 * How a segment of the own log stands. "local-only": sealed, and no tier ever recorded it (a
 * store without a tier); "switching": a compaction output whose switch was cut short (it and its
 * inputs hold the same records; the server finishes the switch when it starts); "missing": the index
 * says it is on the local disk, but it is not (if the object store has it, the server records it
 * as evicted at its next start).
 */
export type SegmentStatState = "active" | Exclude<SegmentState, "active"> | "local-only" | "missing";
export const SEGMENT_STAT_STATES: readonly SegmentStatState[] = ["active", "sealed", "uploaded", "local-only", "evicted", "damaged", "switching", "superseded", "missing"];

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
  /** Bytes of the local segment files: live (what compaction keeps), dead (records nothing needs) and superseded (whole inputs waiting for the reclaim). */
  space: { localBytes: number; liveBytes: number; deadBytes: number; supersededBytes: number };
  compaction: {
    /** Compaction outputs (own log) with their covers, their state and whether a local marker exists. */
    outputs: Array<{ id: number; lo: number; hi: number; state: SegmentStatState; bytes: number; deadBytes: number; localMarker: boolean }>;
    /** Local output files neither marked nor known to the index: deleted when the server starts. */
    orphans: number[];
    /** The n of the next output id the index will give (sys "compactedNext"). */
    next: number;
  };
  /** With `--tier URI --id ID`: the object store's view of the server. */
  objectStore?: ObjectStoreStat;
}

export interface ObjectStoreStat {
  server: string;
  /** Segment objects: normal ones and outputs, with their listed (sealed) bytes. */
  segments: { normal: number; outputs: number; bytes: number };
  /** The resolved log: how many segments a restore reads, the superseded and orphan objects. */
  resolved: number;
  superseded: number[];
  orphans: number[];
  markers: Cover[];
  pins: Pin[];
  /** The highest pinned cut: inputs covering positions up to it are never reclaimed. */
  pinnedCut: number | null;
}

export interface DataStatOptions {
  tier?: { objects: ObjectStore; serverId: string };
}

/** Reads the figures of the stopped server's data directory `dir`. */
export async function dataStat(dir: string, opts: DataStatOptions = {}): Promise<DataStat> {
  const indexDir = path.join(dir, "index");
  const segmentsDir = path.join(dir, "segments");
  checkDataDir(dir, indexDir, segmentsDir);
  const release = lockForReading(dir);
  let stat: DataStat;
  try {
    const index = openIndexReadOnly(indexDir);
    try {
      stat = collect(dir, index, indexDir, segmentsDir);
    } finally {
      await index.close();
    }
  } finally {
    release();
  }
  if (opts.tier) stat.objectStore = await objectStoreStat(opts.tier.objects, opts.tier.serverId);
  return stat;
}

/** What the object store holds of `serverId` (listings only). */
export async function objectStoreStat(objects: ObjectStore, serverId: string): Promise<ObjectStoreStat> {
  let listing: Awaited<ReturnType<typeof listSegments>>;
  let pins: Pin[];
  try {
    listing = await listSegments(objects, serverId);
    pins = await listPins(objects, serverId);
  } catch (err) {
    if (StrataError.is(err)) throw err;
    throw new StrataError("UNAVAILABLE", `the object store cannot be listed (${(err as Error).message}); check --tier and retry`, { cause: err });
  }
  const normal = listing.ids.filter((id) => !isCompacted(id));
  const outputs = listing.ids.filter((id) => isCompacted(id));
  const r = resolveSegments(normal, outputs, listing.markers);
  let bytes = 0;
  for (const size of listing.sizes.values()) bytes += size;
  let pinned: number | null = null;
  for (const p of pins) pinned = Math.max(pinned ?? 0, p.cut);
  return {
    server: serverId,
    segments: { normal: normal.length, outputs: outputs.length, bytes },
    resolved: r.entries.length,
    superseded: r.superseded,
    orphans: r.orphans,
    markers: listing.markers,
    pins,
    pinnedCut: pinned,
  };
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
  // The active segment is the last normal one (outputs have ids from 2^31 on), unless the index
  // records it as superseded (a stopped server's last segment that was compacted).
  const normal = local.filter((id) => !isCompacted(id));
  const last = normal[normal.length - 1];
  const active = last !== undefined && index.segs?.get(last)?.state !== "superseded" ? last : undefined;
  const checkpoint = index.checkpoint ?? null;
  // The active segment may be a pre-zeroed file: its records end before its size (its zero tail).
  // Every figure below counts records (the zero tail is neither live nor dead data).
  const logSizes = new Map(sizes);
  if (active !== undefined) logSizes.set(active, segmentRecordsEnd(segmentPath(segmentsDir, active)));
  const segments = segmentTallies(index, logSizes, active);
  return {
    dir,
    index: { closedCleanly: !fs.existsSync(unsyncedMarkerPath(indexDir)), checkpoint, logBytesAfterCheckpoint: bytesAfter(checkpoint, logSizes) },
    segments: segments.tallies,
    locations: kindTallies(index),
    foreignLogs: foreignLogs(index),
    quarantine: index.quarantine ? listQuarantine(index.quarantine) : [],
    skippedRecords: skippedRecords(index),
    space: space(segments.tallies, logSizes, segments.states, segments.dead),
    compaction: compaction(index, segmentsDir, sizes, segments.states, segments.dead),
  };
}

function space(t: DataStat["segments"], sizes: ReadonlyMap<number, number>, states: ReadonlyMap<number, SegmentStatState>, dead: ReadonlyMap<number, number>): DataStat["space"] {
  let localBytes = 0;
  let deadBytes = 0;
  for (const [id, size] of sizes) {
    if (states.get(id) === "superseded") continue;
    localBytes += size;
    deadBytes += Math.min(size, dead.get(id) ?? 0);
  }
  return { localBytes: localBytes + t.superseded.bytes, liveBytes: localBytes - deadBytes, deadBytes, supersededBytes: t.superseded.bytes };
}

function compaction(index: ReadOnlyIndex, segmentsDir: string, sizes: ReadonlyMap<number, number>, states: ReadonlyMap<number, SegmentStatState>, dead: ReadonlyMap<number, number>): DataStat["compaction"] {
  const markers = fs.existsSync(segmentsDir) ? listLocalMarkers(segmentsDir) : [];
  const marked = new Set(markers.map((c) => c.id));
  const outputs: DataStat["compaction"]["outputs"] = [];
  const known = new Set<number>();
  for (const { key, value } of index.segs?.getRange() ?? []) {
    if (typeof key !== "number" || isForeign(key) || !isCompacted(key) || value?.lo === undefined || value.hi === undefined) continue;
    known.add(key);
    outputs.push({ id: key, lo: value.lo, hi: value.hi, state: states.get(key) ?? "missing", bytes: sizes.get(key) ?? 0, deadBytes: dead.get(key) ?? 0, localMarker: marked.has(key) });
  }
  for (const c of markers) {
    if (known.has(c.id) || !sizes.has(c.id)) continue;
    // Marked but not (yet) known to the index: a compaction that crashed before its switch.
    outputs.push({ id: c.id, lo: c.lo, hi: c.hi, state: states.get(c.id) ?? "local-only", bytes: sizes.get(c.id) ?? 0, deadBytes: dead.get(c.id) ?? 0, localMarker: true });
  }
  const orphans = [...sizes.keys()].filter((id) => isCompacted(id) && !known.has(id) && !marked.has(id));
  const next = index.sys?.get("compactedNext");
  return { outputs: outputs.sort((a, b) => a.id - b.id), orphans, next: typeof next === "number" ? next : 0 };
}

function bytesAfter(cp: { seg: number; off: number } | null, sizes: ReadonlyMap<number, number>): number {
  let n = 0;
  for (const [id, size] of sizes) {
    // Outputs hold records from before the checkpoint (only normal segments take new records).
    if (isCompacted(id)) continue;
    if (cp === null) n += Math.max(0, size - SEGMENT_HEADER_BYTES);
    else if (id === cp.seg) n += Math.max(0, size - cp.off);
    else if (id > cp.seg) n += Math.max(0, size - SEGMENT_HEADER_BYTES);
  }
  return n;
}

const tally = (): Tally => ({ count: 0, bytes: 0, deadBytes: 0 });

function segmentTallies(
  index: ReadOnlyIndex,
  sizes: ReadonlyMap<number, number>,
  active: number | undefined,
): { tallies: DataStat["segments"]; states: Map<number, SegmentStatState>; dead: Map<number, number> } {
  const out = Object.fromEntries([...SEGMENT_STAT_STATES, "total"].map((s) => [s, tally()])) as DataStat["segments"];
  const states = new Map<number, SegmentStatState>();
  const recorded = new Map<number, string>();
  for (const { key, value } of index.segs?.getRange() ?? []) {
    if (typeof key === "number" && !isForeign(key) && typeof value?.state === "string") recorded.set(key, value.state);
  }
  const dead = new Map<number, number>();
  for (const { key, value } of index.deadBytes?.getRange() ?? []) if (typeof key === "number" && typeof value === "number") dead.set(key, value);
  for (const id of new Set([...sizes.keys(), ...recorded.keys()])) {
    const size = sizes.get(id);
    const state = stateOf(id === active, recorded.get(id), size !== undefined);
    states.set(id, state);
    for (const t of [out[state], out.total]) {
      t.count += 1;
      t.bytes += size ?? 0;
      t.deadBytes += dead.get(id) ?? 0;
    }
  }
  return { tallies: out, states, dead };
}

function stateOf(isActive: boolean, recorded: string | undefined, onDisk: boolean): SegmentStatState {
  if (isActive) return "active";
  if (recorded === "evicted") return "evicted";
  // Replaced by a compaction output; on the disk or only in the object store until the reclaim.
  if (recorded === "superseded") return "superseded";
  if (!onDisk) return "missing";
  // A "switching" output is on the local disk (it is written there first): not a local-only segment.
  if (recorded === "sealed" || recorded === "uploaded" || recorded === "damaged" || recorded === "switching") return recorded;
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

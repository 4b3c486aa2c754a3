/**
 * The LMDB index: everything needed to find a record in the log without scanning it.
 *
 * Databases (all in one LMDB environment under `<data>/index`):
 * - `locs`:   location path → LocMeta (numeric id, kind, revision, lastSeq, count, bytes); written
 *             only by `IndexBatch` (./apply.ts), which keeps the read cache `meta()` exact
 * - `locIds`: id → location path
 * - `seqs`:   [locId, seq] → [seg, off, len, valueBytes]
 * - `kvs`:    [locId, key] → [seg, off, len, valueBytes, revision, expiresAt (0 = none)]
 * - `revs`:   [locId, revision] → [seg, off, len(, removed)] of the record that produced it
 * - `dedup`:  [locId, msgId] → [seq, revision, timestamp, commitTime]; `dedupAge`: [commitTime, locId, msgId]
 * - `ttl`:    [expiresAt, locId, key] → revision
 * - `segs`:   segment id → SegmentInfo
 * - `openChunks`: [seg, off] → frame length of a chunk record no set record references yet;
 *             `deadBytes`: segment id → bytes of record frames no index entry needs any more: chunks
 *             nothing will reference, and records an overwrite, delete or expiry superseded
 *             (./dead-chunks.ts; compaction's dead fraction, docs/compaction.md)
 * - `sys`:    "checkpoint" → how far of the log the index reflects, "nextLocId", "format"
 * - `logs`:   foreign log number → server id, "id:<server>" → number, "next" → last number given
 *             (./foreign-logs.ts). A segment id ≥ 2^32 in any pointer names a foreign log's segment.
 *             Adding this table changed no existing table's layout, so INDEX_FORMAT stayed 2: an
 *             index of the previous release opens as one with no foreign logs.
 * - `quarantine`: location → { movedTo, records, fromSegment, at } of a location that moved away
 *             while this server held records of it it never shipped (./quarantine.ts). Added the
 *             same way as `logs`: an older index opens as one with an empty quarantine.
 * - `conf`:   locId → ConfEntry { seg, off, len, limits }: the location's newest `config` record
 *             and its limits (absent: no limits); `confAge`: locId → maxAgeMs of the locations
 *             that have one, so the age sweep finds them without scanning every location. Written
 *             only by ./apply.ts and ./import-rows.ts. Added like `logs`: an older index opens as
 *             one where no location has limits, so INDEX_FORMAT stays 2.
 * - `lineage`: location → [[epoch, start revision], ..] of the takeovers along its chain of owners
 *             (./lineage.ts), written only by applying an `import` record. Added like `logs`.
 *
 * The per-record databases (`seqs`, `revs`, `kvs`) use the compact binary keys and values of
 * ./codecs.ts; the others use lmdb-js's default encodings.
 *
 * Opening reads a handful of keys, never anything proportional to the number of locations or
 * records. Writes happen in synchronous LMDB transactions, and LMDB never fsyncs them (`noSync`):
 * the log is the durable truth, the checkpoint says how much of it to replay, and a process crash
 * loses nothing written to the OS. Only an OS crash or power loss can lose or tear index pages;
 * ./unsynced-marker.ts detects that and has the index rebuilt from the log. `close` fsyncs, then
 * records a checksum of the file; `open` checks the file (that checksum, LMDB's meta pages) before
 * lmdb maps it (./index-check.ts), so a damaged file is refused with CORRUPT instead of crashing
 * the process with SIGBUS or SIGSEGV.
 */
import fs from "node:fs";
import path from "node:path";
import { open, type Database, type RootDatabase } from "lmdb";
import { assert } from "../assert.js";
import { StrataError } from "../errors.js";
import type { Kind, LocationLimits } from "../types.js";
import { uintPairKey, uintStringKey, uintTupleValue } from "./codecs.js";
import { INDEX_FILE, dropIndexSum, indexFileProblem, writeIndexSum } from "./index-check.js";
import { MetaCache } from "./meta-cache.js";
import type { QuarantineTable } from "./quarantine.js";

export const INDEX_FORMAT = 2;

export interface LocMeta {
  id: number;
  kind: Kind;
  rev: number;
  lastSeq: number;
  count: number;
  bytes: number;
}

export type SeqEntry = [seg: number, off: number, len: number, valueBytes: number];
export type KvIndexEntry = [seg: number, off: number, len: number, valueBytes: number, rev: number, expiresAt: number];
/** A deleteAll's entry also holds how many messages it removed. */
export type RevEntry = [seg: number, off: number, len: number, removed?: number];
/** `at` is the commit time the dedup window counts from. */
export type DedupEntry = [seq: number, rev: number, ts: number, at: number];

/**
 * "damaged": uploaded with damaged ranges carried as they are; kept locally, never evicted.
 * "superseded": an input of a compaction whose output replaced it (docs/compaction.md); it waits
 * for the reclaim to delete it, and nothing points into it any more.
 * "switching": a compaction output whose switch is under way in chunks (../index/compact-switch.ts):
 * entries point into it or into its inputs (identical data); the next open or compaction finishes it.
 */
export type SegmentState = "active" | "sealed" | "uploaded" | "damaged" | "evicted" | "superseded" | "switching";
export interface SegmentInfo {
  state: SegmentState;
  bytes: number;
  /** A compaction output: the normal segment ids of the first and last segment it covers. */
  lo?: number;
  hi?: number;
  /** A superseded input: the output that replaced it, when (ms), and the active segment then. */
  by?: number;
  at?: number;
  after?: number;
}

/** A location's configuration: where its `config` record is, and the limits it set. */
export interface ConfEntry {
  seg: number;
  off: number;
  len: number;
  limits: LocationLimits;
}

export interface Checkpoint {
  seg: number;
  off: number;
}

type Key = [number, number] | [number, string];

/** lmdb-js transaction flags: abortable, synchronous commit, do not wait for the disk flush. */
const TXN_NO_FLUSH_WAIT = 0x1 | 0x2 | 0x10000;
const INDEX_MAP_BYTES = 64 * 1024 * 1024 * 1024;

export class LmdbIndex {
  readonly locs: Database<LocMeta, string>;
  readonly locIds: Database<string, number>;
  readonly seqs: Database<SeqEntry, Key>;
  readonly kvs: Database<KvIndexEntry, Key>;
  readonly revs: Database<RevEntry, Key>;
  readonly dedup: Database<DedupEntry, Key>;
  readonly dedupAge: Database<null, [number, number, string]>;
  readonly ttl: Database<number, [number, number, string]>;
  readonly segs: Database<SegmentInfo, number>;
  readonly openChunks: Database<number, [number, number]>;
  readonly deadBytes: Database<number, number>;
  readonly sys: Database<unknown, string>;
  readonly logs: Database<unknown, number | string>;
  readonly quarantine: QuarantineTable;
  readonly conf: Database<ConfEntry, number>;
  readonly confAge: Database<number, number>;
  readonly lineage: Database<unknown, string>;
  private readonly metaCache: MetaCache;
  /** Metadata written by the transaction in progress, for the cache once it commits. */
  private pendingMetas: Array<ReadonlyMap<string, LocMeta>> = [];
  /** Locations removed by the transaction in progress (an import left them empty). */
  private pendingRemoved: string[] = [];
  private writing = false;

  private constructor(readonly root: RootDatabase, readonly dir: string, metaCacheMax: number) {
    this.metaCache = new MetaCache(metaCacheMax);
    const sub = <V, K extends import("lmdb").Key>(name: string, codecs: object = {}) => root.openDB<V, K>({ name, cache: false, ...codecs });
    this.locs = sub("locs");
    this.locIds = sub("locIds");
    this.seqs = sub("seqs", { keyEncoder: uintPairKey, encoder: uintTupleValue });
    this.kvs = sub("kvs", { keyEncoder: uintStringKey, encoder: uintTupleValue });
    this.revs = sub("revs", { keyEncoder: uintPairKey, encoder: uintTupleValue });
    this.dedup = sub("dedup");
    this.dedupAge = sub("dedupAge");
    this.ttl = sub("ttl");
    this.segs = sub("segs");
    this.openChunks = sub("openChunks", { keyEncoder: uintPairKey });
    this.deadBytes = sub("deadBytes");
    this.sys = sub("sys");
    this.logs = sub("logs");
    this.quarantine = sub("quarantine");
    this.conf = sub("conf");
    this.confAge = sub("confAge");
    this.lineage = sub("lineage");
  }

  static open(dir: string, opts: { metaCacheMax: number }): LmdbIndex {
    fs.mkdirSync(dir, { recursive: true });
    const problem = indexFileProblem(dir);
    if (problem !== undefined) {
      throw new StrataError("CORRUPT", `the index at ${dir} is damaged (${problem}); it will be moved aside and rebuilt from the log`);
    }
    // From here on the file may change, and the checksum of its last close no longer holds.
    dropIndexSum(dir);
    let root: RootDatabase;
    try {
      root = open({ path: path.join(dir, INDEX_FILE), maxDbs: 32, mapSize: INDEX_MAP_BYTES, noSubdir: true, noSync: true });
    } catch (cause) {
      throw new StrataError("CORRUPT", `the index at ${dir} cannot be opened (${(cause as Error).message}); it will be rebuilt from the log`, { cause });
    }
    const index = new LmdbIndex(root, dir, opts.metaCacheMax);
    const format = index.sys.get("format");
    if (format === undefined) {
      index.write(() => index.sys.put("format", INDEX_FORMAT));
    } else if (format !== INDEX_FORMAT) {
      root.close();
      throw new StrataError("CORRUPT", `the index at ${dir} has format ${String(format)}, this Strata writes ${INDEX_FORMAT}; it will be rebuilt from the log`);
    }
    return index;
  }

  /** Removes the index files so the next open starts empty (used to rebuild from the log). */
  static destroy(dir: string): void {
    fs.rmSync(dir, { recursive: true, force: true });
  }

  /** Runs `fn` in one synchronous write transaction. */
  write<T>(fn: () => T): T {
    assert(!this.writing, "index write transactions do not nest");
    this.writing = true;
    try {
      const result = this.root.transactionSync(fn, TXN_NO_FLUSH_WAIT);
      for (const metas of this.pendingMetas) for (const [loc, meta] of metas) this.metaCache.set(loc, meta);
      for (const loc of this.pendingRemoved) this.metaCache.set(loc, undefined);
      return result;
    } finally {
      this.pendingMetas = [];
      this.pendingRemoved = [];
      this.writing = false;
    }
  }

  /**
   * A location's metadata as of the last committed transaction, through the cache. Inside a write
   * transaction it reads `locs` directly (and caches nothing): the transaction may still abort.
   */
  meta(location: string): Readonly<LocMeta> | undefined {
    if (this.writing) return this.locs.get(location);
    const hit = this.metaCache.get(location);
    if (hit !== undefined) return hit ?? undefined;
    const meta = this.locs.get(location);
    this.metaCache.set(location, meta);
    return meta;
  }

  /** Called by `IndexBatch.finish` with the metadata it wrote in the current transaction. */
  metasWritten(metas: ReadonlyMap<string, LocMeta>, removed: readonly string[] = []): void {
    assert(this.writing, "location metadata is written inside a write transaction");
    this.pendingMetas.push(metas);
    this.pendingRemoved.push(...removed);
  }

  checkpoint(): Checkpoint | undefined {
    return this.sys.get("checkpoint") as Checkpoint | undefined;
  }

  setCheckpoint(cp: Checkpoint): void {
    this.sys.put("checkpoint", cp);
  }

  nextLocId(): number {
    const id = ((this.sys.get("nextLocId") as number | undefined) ?? 0) + 1;
    this.sys.put("nextLocId", id);
    return id;
  }

  /** Waits until every committed transaction is on disk. */
  async flushed(): Promise<void> {
    await this.root.flushed;
  }

  /** Waits for the last commit, fsyncs the index file and closes it. */
  async close(): Promise<void> {
    await this.root.flushed;
    // `sync` (mdb_env_sync, forced) is in lmdb-js but missing from its type declarations.
    const root = this.root as unknown as { sync(done: (err?: Error) => void): void };
    await new Promise<void>((resolve, reject) => root.sync((err) => (err ? reject(err) : resolve())));
    await this.root.close();
    writeIndexSum(this.dir);
  }
}

/**
 * The local segment files of a store with a cold tier, kept within the `cacheBytes` budget: which
 * own segments are on the local disk, how large they are, which may be evicted, and when each was
 * last used. Owned by the tier (./tier.ts), which tells it what was sealed, shipped and read.
 *
 * Invariants:
 * - A local segment file is deleted only after its upload succeeded whole (`noteUploaded`); the
 *   active segment, segments not yet uploaded, quarantined ones and ones shipped with damaged
 *   ranges are never evicted.
 * - `cacheBytes` bounds all local segment files (active and not-yet-uploaded ones included): on
 *   every `evict` (the tier calls it after every seal and every upload), uploaded segments are
 *   evicted, least recently used first (never-read ones before any read one, oldest id first),
 *   until the files fit or none is left.
 * - An evicted segment is recorded as "evicted" in the index, and its cached read descriptor is
 *   closed (`forgetLocal`) before its file is deleted.
 * - Foreign segments (../index/foreign-logs.ts) are never here: the tier never hands them over.
 */
import fs from "node:fs";
import type { LmdbIndex } from "../index/lmdb-index.js";
import { segmentPath } from "../log/segment-files.js";

export interface LocalCacheHooks {
  /** Close a cached read descriptor before a segment file is deleted. */
  forgetLocal: (seg: number) => void;
  /** The segment taking appends now. */
  activeSegment: () => number;
}

export class LocalCache {
  private readonly evicted = new Set<number>();
  /** Sizes of the local, sealed segment files (uploaded or not); the active one is not here. */
  private readonly localBytes = new Map<number, number>();
  /** Local segments that are in the object store too, so they may be evicted. */
  private readonly localUploaded = new Set<number>();
  /** When each evictable segment was last used (uploaded or read), for least-recently-used eviction. */
  private readonly lastAccess = new Map<number, number>();

  constructor(
    private readonly segmentsDir: string,
    private readonly index: LmdbIndex,
    private readonly cacheBytes: number,
    private readonly hooks: LocalCacheHooks,
    /** Called once for every segment file evicted (the tier counts them). */
    private readonly onEvicted: () => void,
  ) {}

  /** Whether own segment `seg` is read from the local disk. */
  isLocal(seg: number): boolean {
    return !this.evicted.has(seg);
  }

  /** Own segment `seg` is in the object store only (found so at open); the caller records it in the index. */
  noteEvicted(seg: number): void {
    this.evicted.add(seg);
  }

  /** Own segment `seg` is a sealed local file of `bytes` bytes, not yet evictable. */
  noteSealed(seg: number, bytes: number): void {
    this.localBytes.set(seg, bytes);
  }

  /** Sealed local segment `seg` is in the object store whole, so it may be evicted. */
  noteUploaded(seg: number): void {
    this.localUploaded.add(seg);
  }

  /** Notes a use of a local segment (a read, or its upload), for least-recently-used eviction. */
  touch(seg: number): void {
    if (this.localUploaded.has(seg)) this.lastAccess.set(seg, performance.now());
  }

  /**
   * Deletes uploaded local segment files, least recently used first, until all local segment
   * files (the active one included) fit in cacheBytes or nothing evictable is left.
   */
  evict(): void {
    if (this.localUploaded.size === 0) return;
    let total = this.bytes;
    if (total <= this.cacheBytes) return;
    // Never-read segments (no access time) go first, oldest id first.
    const order = [...this.localUploaded].sort((a, b) => (this.lastAccess.get(a) ?? 0) - (this.lastAccess.get(b) ?? 0) || a - b);
    const evicted: Array<[number, number]> = [];
    for (const seg of order) {
      if (total <= this.cacheBytes) break;
      this.hooks.forgetLocal(seg);
      fs.rmSync(segmentPath(this.segmentsDir, seg), { force: true });
      const bytes = this.localBytes.get(seg) ?? 0;
      total -= bytes;
      this.localBytes.delete(seg);
      this.localUploaded.delete(seg);
      this.lastAccess.delete(seg);
      this.evicted.add(seg);
      this.onEvicted();
      evicted.push([seg, bytes]);
    }
    // An output keeps its cover, and every segment its raw size (compaction's dead fraction).
    if (evicted.length > 0) this.index.write(() => evicted.forEach(([seg, bytes]) => this.index.segs.put(seg, { ...this.index.segs.get(seg), state: "evicted", bytes })));
  }

  /** A compaction superseded `seg`: never evicted (the reclaim deletes it), still counted while local. */
  keep(seg: number): void {
    this.localUploaded.delete(seg);
    this.lastAccess.delete(seg);
  }

  /** The reclaim deleted `seg`'s local file (reads go to the object store, while it is there). */
  localGone(seg: number): void {
    this.localBytes.delete(seg);
    this.localUploaded.delete(seg);
    this.lastAccess.delete(seg);
    this.evicted.add(seg);
  }

  /** Bytes of local segment files: the active one, those waiting for upload, and uploaded ones not evicted. */
  get bytes(): number {
    let total = this.activeBytes();
    for (const bytes of this.localBytes.values()) total += bytes;
    return total;
  }

  private activeBytes(): number {
    try {
      return fs.statSync(segmentPath(this.segmentsDir, this.hooks.activeSegment())).size;
    } catch {
      return 0; // being created
    }
  }
}

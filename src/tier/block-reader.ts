/**
 * Fault-in of evicted segments: a record is read from the object store by fetching only the
 * compressed block that holds it (one ranged read once the segment's footer is known), verifying
 * the block's checksum and the record's own frame checksum, and keeping recently used blocks in
 * a memory cache bounded by `blockCacheBytes`. A segment's footer costs one ranged read of the
 * object's tail (two when the footer is larger than `FOOTER_READ_BYTES`), plus a HEAD when the
 * object's size is not known from its upload or the tier's listing; footers are cached up to
 * `footerCacheMax` segments.
 *
 * Segment ids are resolved to object keys by the caller's `keyOf`: an id of the own log names the
 * server's own object, a foreign one (≥ 2^32, ../index/foreign-logs.ts) another server's; caches
 * are keyed by the full id, so segments of different servers never share an entry. A sealed
 * object's footer names the segment by its id within its own log (`localSeg`).
 *
 * Corrupt bytes are reported as CORRUPT, never served. A read that fails its checksum is made once
 * more before that, since a flipped bit in transit is not corruption of the stored object.
 */
import { LRUCache } from "lru-cache";
import { StrataError } from "../errors.js";
import { localSeg } from "../index/foreign-logs.js";
import { parseFrame } from "../log/framing.js";
import type { Pointer } from "../log/record.js";
import type { Limits } from "../limits.js";
import type { ObjectStore } from "./object-store.js";
import { SEALED_TRAILER_BYTES, findBlock, openBlock, parseFooter, parseTrailer, type SealedFooter } from "./sealed-segment.js";

/**
 * Bytes read from the end of a sealed object to get its trailer, in the same read as its footer
 * whenever the footer is smaller (a 64 MiB segment of 64 KiB blocks has a footer of ~30 KiB).
 */
export const FOOTER_READ_BYTES = 64 * 1024;

/** A read whose checksum fails is made once more: a bit flipped in transit is not worth an error. */
const CORRUPT_READ_ATTEMPTS = 2;

type Block = { raw: number; rawLen: number; off: number; len: number; crc: number };

export class BlockReader {
  /** Footers by segment, at most footerCacheMax (least recently used dropped first). */
  private readonly footers: LRUCache<number, Promise<SealedFooter>>;
  /** Decompressed blocks by "<seg>:<raw offset>", at most blockCacheBytes of them (least recently used dropped first). */
  private readonly blocks: LRUCache<string, Buffer>;
  /** Blocks being fetched, so concurrent reads of one block share one request. */
  private readonly loading = new Map<string, Promise<Buffer>>();
  /** Sizes of sealed objects, when known, so reading a footer needs no HEAD request first. */
  private readonly sizes = new Map<number, number>();
  /** Ranged reads made (for tests and the benchmark): one per block, one or two per footer. */
  fetches = 0;

  constructor(
    private readonly objects: ObjectStore,
    /** The object key of a segment id (own or foreign). */
    private readonly keyOf: (seg: number) => string,
    private readonly limits: Limits,
  ) {
    this.footers = new LRUCache({ max: limits.footerCacheMax });
    // Every block fits: limits.ts checks blockCacheBytes >= blockBytes + recordBytesMax.
    this.blocks = new LRUCache({ maxSize: limits.blockCacheBytes, sizeCalculation: (b) => Math.max(1, b.byteLength) });
  }

  async readBody(ptr: Pointer): Promise<Buffer> {
    const footer = await this.footer(ptr.seg);
    const block = findBlock(footer, ptr.off);
    if (!block || ptr.off + ptr.len > block.raw + block.rawLen) {
      throw new StrataError("CORRUPT", `no block of sealed segment ${ptr.seg} holds offset ${ptr.off}; run \`strata reindex\``);
    }
    const raw = await this.block(ptr.seg, block);
    const at = ptr.off - block.raw;
    const parsed = parseFrame(raw.subarray(at, at + ptr.len), 0, this.limits.recordBytesMax);
    if (parsed.kind !== "ok" || parsed.next !== ptr.len) {
      throw new StrataError("CORRUPT", `record at segment ${ptr.seg} offset ${ptr.off} in the object store fails verification`);
    }
    // A copy: decoded values are views of the body, and the caller owns them; a view of the
    // cached block would let a caller's change to a value damage the block for every later read.
    return Buffer.from(parsed.body);
  }

  private footer(seg: number): Promise<SealedFooter> {
    let f = this.footers.get(seg);
    if (!f) {
      f = retryCorrupt(() => this.fetchFooter(seg));
      this.footers.set(seg, f);
      f.catch(() => {
        if (this.footers.peek(seg) === f) this.footers.delete(seg);
      });
    }
    return f;
  }

  /** Records the size of a sealed object (known from its upload or a listing). */
  noteSize(seg: number, size: number): void {
    this.sizes.set(seg, size);
  }

  private async fetchFooter(seg: number): Promise<SealedFooter> {
    const key = this.keyOf(seg);
    const known = this.sizes.get(seg);
    // A size learnt earlier may be stale (the object was replaced): a failure forgets it, and the
    // retry of a CORRUPT read asks for the size again.
    this.sizes.delete(seg);
    const size = known ?? (await this.objects.head(key))?.size;
    if (size === undefined) throw missing(seg);
    const tailLen = Math.min(size, FOOTER_READ_BYTES);
    this.fetches++;
    const tail = await this.objects.get(key, { offset: size - tailLen, length: tailLen });
    if (!tail) throw missing(seg);
    if (tail.byteLength !== tailLen) throw changed(seg);
    const t = parseTrailer(seg, size, tail.subarray(tailLen - SEALED_TRAILER_BYTES));
    const tailStart = size - tailLen;
    let footer: SealedFooter;
    if (t.off >= tailStart) {
      footer = parseFooter(localSeg(seg), tail.subarray(t.off - tailStart, t.off - tailStart + t.len), t.crc);
    } else {
      this.fetches++;
      const bytes = await this.objects.get(key, { offset: t.off, length: t.len });
      if (!bytes) throw missing(seg);
      footer = parseFooter(localSeg(seg), bytes, t.crc);
    }
    this.sizes.set(seg, size);
    return footer;
  }

  private block(seg: number, b: Block): Promise<Buffer> {
    const cacheKey = `${seg}:${b.raw}`;
    const hit = this.blocks.get(cacheKey);
    if (hit) return Promise.resolve(hit);
    let loading = this.loading.get(cacheKey);
    if (!loading) {
      loading = retryCorrupt(() => this.fetchBlock(seg, b)).finally(() => this.loading.delete(cacheKey));
      this.loading.set(cacheKey, loading);
      loading.then((raw) => this.remember(cacheKey, raw), () => undefined);
    }
    return loading;
  }

  private async fetchBlock(seg: number, b: Block): Promise<Buffer> {
    this.fetches++;
    const compressed = await this.objects.get(this.keyOf(seg), { offset: b.off, length: b.len });
    if (!compressed) throw missing(seg);
    return openBlock(seg, b, compressed);
  }

  private remember(cacheKey: string, raw: Buffer): void {
    if (!this.blocks.has(cacheKey)) this.blocks.set(cacheKey, raw);
  }

  /** Drops cached footers and blocks of a segment (e.g. after it was replaced by compaction). */
  forget(seg: number): void {
    this.footers.delete(seg);
    this.sizes.delete(seg);
    for (const key of [...this.blocks.keys()]) if (key.startsWith(`${seg}:`)) this.blocks.delete(key);
  }

  /** Drops the cached blocks, and the footers too with "all" (the benchmark measures cold reads so). */
  clear(what: "blocks" | "all" = "all"): void {
    if (what === "all") this.footers.clear();
    this.blocks.clear();
  }
}

async function retryCorrupt<T>(fetch: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fetch();
    } catch (err) {
      if (!StrataError.is(err, "CORRUPT") || attempt >= CORRUPT_READ_ATTEMPTS) throw err;
    }
  }
}

function missing(seg: number): StrataError {
  return new StrataError("UNAVAILABLE", `sealed segment ${seg} is not in the object store (yet); retry, or check the tier configuration`);
}

function changed(seg: number): StrataError {
  return new StrataError("CORRUPT", `sealed segment ${seg} in the object store is shorter than its listed size; it was truncated or replaced`);
}

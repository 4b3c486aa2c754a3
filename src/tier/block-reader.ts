/**
 * Fault-in of evicted segments: a record is read from the object store by fetching only the
 * compressed block that holds it (one ranged read once the segment's footer is known), verifying
 * the block's checksum and the record's own frame checksum, and keeping recently used blocks in
 * a memory cache bounded by `blockCacheBytes`. Corrupt bytes are reported as CORRUPT, never served.
 */
import { StrataError } from "../errors.js";
import { parseFrame } from "../log/framing.js";
import type { Pointer } from "../log/record.js";
import type { Limits } from "../limits.js";
import type { ObjectStore } from "./object-store.js";
import { SEALED_TRAILER_BYTES, findBlock, openBlock, parseFooter, parseTrailer, type SealedFooter } from "./sealed-segment.js";
import { segmentKey } from "./segment-keys.js";

export class BlockReader {
  private readonly footers = new Map<number, Promise<SealedFooter>>();
  private readonly blocks = new Map<string, Buffer>();
  private blockBytes = 0;
  /** Ranged reads made (for tests and the benchmark). */
  fetches = 0;

  constructor(
    private readonly objects: ObjectStore,
    private readonly serverId: string,
    private readonly limits: Limits,
  ) {}

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
    return parsed.body;
  }

  private footer(seg: number): Promise<SealedFooter> {
    let f = this.footers.get(seg);
    if (!f) {
      f = this.fetchFooter(seg);
      this.footers.set(seg, f);
      f.catch(() => this.footers.delete(seg));
      while (this.footers.size > this.limits.footerCacheMax) this.footers.delete(this.footers.keys().next().value as number);
    }
    return f;
  }

  private async fetchFooter(seg: number): Promise<SealedFooter> {
    const key = segmentKey(this.serverId, seg);
    const head = await this.objects.head(key);
    if (!head) throw missing(seg);
    this.fetches++;
    const trailer = await this.objects.get(key, { offset: head.size - SEALED_TRAILER_BYTES, length: SEALED_TRAILER_BYTES });
    if (!trailer) throw missing(seg);
    const t = parseTrailer(seg, head.size, trailer);
    this.fetches++;
    const footer = await this.objects.get(key, { offset: t.off, length: t.len });
    if (!footer) throw missing(seg);
    return parseFooter(seg, footer, t.crc);
  }

  private async block(seg: number, b: { raw: number; rawLen: number; off: number; len: number; crc: number }): Promise<Buffer> {
    const cacheKey = `${seg}:${b.raw}`;
    const hit = this.blocks.get(cacheKey);
    if (hit) {
      this.blocks.delete(cacheKey);
      this.blocks.set(cacheKey, hit);
      return hit;
    }
    this.fetches++;
    const compressed = await this.objects.get(segmentKey(this.serverId, seg), { offset: b.off, length: b.len });
    if (!compressed) throw missing(seg);
    const raw = openBlock(seg, b, compressed);
    this.blocks.set(cacheKey, raw);
    this.blockBytes += raw.byteLength;
    while (this.blockBytes > this.limits.blockCacheBytes && this.blocks.size > 1) {
      const [oldKey, old] = this.blocks.entries().next().value as [string, Buffer];
      this.blocks.delete(oldKey);
      this.blockBytes -= old.byteLength;
    }
    return raw;
  }

  /** Drops cached footers and blocks of a segment (e.g. after it was replaced by compaction). */
  forget(seg: number): void {
    this.footers.delete(seg);
    for (const key of [...this.blocks.keys()]) {
      if (key.startsWith(`${seg}:`)) {
        this.blockBytes -= this.blocks.get(key)!.byteLength;
        this.blocks.delete(key);
      }
    }
  }
}

function missing(seg: number): StrataError {
  return new StrataError("UNAVAILABLE", `sealed segment ${seg} is not in the object store (yet); retry, or check the tier configuration`);
}

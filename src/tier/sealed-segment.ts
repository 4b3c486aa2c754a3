/**
 * The sealed form of a segment, as shipped to the object store.
 *
 * Layout: `"STRATSST"` | block 0 | block 1 | … | footer (CBOR) | u32 footerLength | u32 footerCrc |
 * `"STRATEND"`. Each block is the zstd-compressed run of whole framed records covering raw
 * segment bytes `[raw, raw + rawLen)`; blocks are ~`blockBytes` of raw records, so a record's
 * pointer (segment, raw offset) maps to one block and one message is fetched with one ranged read
 * once the footer is known. The footer holds the block index (with a CRC of each compressed
 * block, verified before decompressing) and a per-location directory (which blocks hold records of
 * which location), used to rebuild and compact without decompressing everything.
 *
 * A segment with damaged ranges (a record that fails its checksum or does not decode, found by
 * ../log/frame-scan.ts `scanRecords`, the very walk recovery uses) is sealed all the same: the damaged
 * bytes are carried as they are, in blocks like any others, and listed in the footer (`damaged`),
 * so the sealed object unseals to the very bytes of the local file, a restore replays it exactly
 * as the local recovery would (skipping the same ranges), and a pointer into a damaged range still
 * fails its frame checksum on read (CORRUPT). Only a segment whose header is wrong is refused.
 *
 * Everything here is pure: bytes in, bytes out.
 */
import { crc32 } from "node:zlib";
import { decode, encode } from "cbor-x";
import { compress, decompress } from "zstd-napi";
import { StrataError } from "../errors.js";
import { scanRecords, type DamagedRange } from "../log/frame-scan.js";
import { SEGMENT_HEADER_BYTES, checkSegmentHeader, segmentHeader } from "../log/segment-files.js";

const HEAD_MAGIC = Buffer.from("STRATSST", "latin1");
const END_MAGIC = Buffer.from("STRATEND", "latin1");
export const SEALED_TRAILER_BYTES = 16;
const ZSTD_LEVEL = 3;

export interface BlockEntry {
  /** Raw segment offset of the block's first record. */
  raw: number;
  rawLen: number;
  /** Offset and length of the compressed block in the object. */
  off: number;
  len: number;
  crc: number;
}

export interface SealedFooter {
  seg: number;
  /** Length of the raw segment file, header included. */
  rawBytes: number;
  blocks: BlockEntry[];
  /** location → [first block, last block, record count]. */
  locations: Array<[string, number, number, number]>;
  /** Damaged ranges carried as raw bytes: [raw offset, length]. Absent when there are none. */
  damaged?: Array<[number, number]>;
}

function corrupt(seg: number, why: string): StrataError {
  return new StrataError("CORRUPT", `sealed segment ${seg} in the object store is damaged: ${why}. It is not served; restore it from another copy.`);
}

/** Reports each damaged range carried by a sealing. */
export type OnDamaged = (range: DamagedRange) => void;

/** Builds the sealed object of a raw segment file; damaged ranges are carried and reported. */
export function sealSegment(seg: number, raw: Buffer, blockBytes: number, recordBytesMax: number, onDamaged?: OnDamaged): Buffer {
  return runToEnd(sealSteps(seg, raw, blockBytes, recordBytesMax, onDamaged));
}

/** Bytes worked on (compressed, copied or decompressed) between two turns of the event loop in the async variants. */
const SEAL_SLICE_BYTES = 1024 * 1024;

/** Runs steps that yield the bytes each one worked on to their result, in one synchronous call. */
function runToEnd<T>(steps: Generator<number, T>): T {
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
  }
}

/** Runs the same steps, giving the event loop a turn after every ~SEAL_SLICE_BYTES of work. */
async function runInSlices<T>(steps: Generator<number, T>): Promise<T> {
  let sinceYield = 0;
  for (;;) {
    const step = steps.next();
    if (step.done) return step.value;
    sinceYield += step.value;
    if (sinceYield >= SEAL_SLICE_BYTES) {
      sinceYield = 0;
      await new Promise((resolve) => setImmediate(resolve));
    }
  }
}

/**
 * `sealSegment`, giving the event loop a turn after every ~1 MiB compressed, so sealing a large
 * segment does not stall the requests being served meanwhile (zstd runs synchronously).
 */
export function sealSegmentAsync(seg: number, raw: Buffer, blockBytes: number, recordBytesMax: number, onDamaged?: OnDamaged): Promise<Buffer> {
  return runInSlices(sealSteps(seg, raw, blockBytes, recordBytesMax, onDamaged));
}

/** The sealing itself; yields the raw length of each block as it is compressed. */
function* sealSteps(seg: number, raw: Buffer, blockBytes: number, recordBytesMax: number, onDamaged?: OnDamaged): Generator<number, Buffer> {
  checkSegmentHeader(seg, raw);
  const parts: Buffer[] = [HEAD_MAGIC];
  let objOff = HEAD_MAGIC.byteLength;
  const blocks: BlockEntry[] = [];
  const locs = new Map<string, [number, number, number]>();
  let start = SEGMENT_HEADER_BYTES;
  let off = start;
  const flush = (end: number) => {
    const compressed = compress(raw.subarray(start, end), { compressionLevel: ZSTD_LEVEL });
    blocks.push({ raw: start, rawLen: end - start, off: objOff, len: compressed.byteLength, crc: crc32(compressed) });
    parts.push(compressed);
    objOff += compressed.byteLength;
    start = end;
  };
  const damaged: Array<[number, number]> = [];
  for (const step of scanRecords(raw, off, recordBytesMax)) {
    if (step.kind === "damaged") {
      const next = step.next ?? raw.byteLength;
      damaged.push([off, next - off]);
      onDamaged?.({ off, bytes: next - off, reason: step.reason });
      // Carried as they are, in block-sized pieces: a block is a byte range, whole records are
      // only needed where there are records.
      while (off < next) {
        off = Math.min(next, start + blockBytes);
        if (off - start >= blockBytes) {
          const len = off - start;
          flush(off);
          yield len;
        }
      }
      continue;
    }
    const rec = step.rec;
    if (rec.t !== "chunk") {
      const block = blocks.length;
      const l = locs.get(rec.loc);
      if (l) {
        l[1] = block;
        l[2] += 1;
      } else locs.set(rec.loc, [block, block, 1]);
    }
    off = step.next;
    if (off - start >= blockBytes) {
      const len = off - start;
      flush(off);
      yield len;
    }
  }
  if (off > start) flush(off);
  const footer: SealedFooter = { seg, rawBytes: raw.byteLength, blocks, locations: [...locs].map(([loc, v]) => [loc, ...v]) };
  if (damaged.length > 0) footer.damaged = damaged;
  const footerBytes = Buffer.from(encode(footer));
  const trailer = Buffer.alloc(SEALED_TRAILER_BYTES);
  trailer.writeUInt32BE(footerBytes.byteLength, 0);
  trailer.writeUInt32BE(crc32(footerBytes), 4);
  END_MAGIC.copy(trailer, 8);
  parts.push(footerBytes, trailer);
  // Assembled a piece at a time (yielding the bytes copied): one Buffer.concat of a 64 MiB
  // object into fresh memory held the event loop for 130–370 ms on the development VM.
  const out = Buffer.allocUnsafeSlow(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  let copied = 0;
  for (const p of parts) {
    at += p.copy(out, at);
    copied += p.byteLength;
    if (copied >= SEAL_SLICE_BYTES) {
      yield copied;
      copied = 0;
    }
  }
  return out;
}

/** Reads the trailer (the object's last 16 bytes): where the footer starts and its checksum. */
export function parseTrailer(seg: number, objectSize: number, trailerUntrusted: Uint8Array): { off: number; len: number; crc: number } {
  const t = Buffer.from(trailerUntrusted.buffer, trailerUntrusted.byteOffset, trailerUntrusted.byteLength);
  if (t.byteLength !== SEALED_TRAILER_BYTES || !t.subarray(8).equals(END_MAGIC)) throw corrupt(seg, "bad trailer");
  const len = t.readUInt32BE(0);
  const off = objectSize - SEALED_TRAILER_BYTES - len;
  if (off < HEAD_MAGIC.byteLength) throw corrupt(seg, "footer length out of range");
  return { off, len, crc: t.readUInt32BE(4) };
}

export function parseFooter(seg: number, footerUntrusted: Uint8Array, crc: number): SealedFooter {
  if (crc32(footerUntrusted) !== crc) throw corrupt(seg, "footer checksum mismatch");
  let f: SealedFooter;
  try {
    f = decode(footerUntrusted) as SealedFooter;
  } catch {
    throw corrupt(seg, "footer does not decode");
  }
  if (f === null || typeof f !== "object" || f.seg !== seg || !Array.isArray(f.blocks) || !Array.isArray(f.locations) || (f.damaged !== undefined && !Array.isArray(f.damaged))) {
    throw corrupt(seg, "footer has the wrong shape or names another segment");
  }
  return f;
}

/** The block holding raw offset `off`, by binary search. */
export function findBlock(footer: SealedFooter, off: number): BlockEntry | undefined {
  let lo = 0;
  let hi = footer.blocks.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const b = footer.blocks[mid]!;
    if (off < b.raw) hi = mid - 1;
    else if (off >= b.raw + b.rawLen) lo = mid + 1;
    else return b;
  }
  return undefined;
}

/** Verifies and decompresses one block. */
export function openBlock(seg: number, block: BlockEntry, compressedUntrusted: Uint8Array): Buffer {
  if (compressedUntrusted.byteLength !== block.len || crc32(compressedUntrusted) !== block.crc) {
    throw corrupt(seg, `block at raw offset ${block.raw} fails its checksum`);
  }
  let raw: Buffer;
  try {
    raw = decompress(compressedUntrusted);
  } catch {
    throw corrupt(seg, `block at raw offset ${block.raw} does not decompress`);
  }
  if (raw.byteLength !== block.rawLen) throw corrupt(seg, `block at raw offset ${block.raw} has the wrong length`);
  return raw;
}

/** Turns a whole sealed object back into the raw segment file it was made from. */
export function unsealSegment(seg: number, objectUntrusted: Uint8Array): Buffer {
  return runToEnd(unsealSteps(seg, objectUntrusted));
}

/**
 * `unsealSegment`, giving the event loop a turn after every ~1 MiB decompressed: a compaction
 * reading an evicted input unseals a whole object, which in one synchronous call would stall the
 * requests being served meanwhile (zstd and the CRCs run synchronously).
 */
export function unsealSegmentAsync(seg: number, objectUntrusted: Uint8Array): Promise<Buffer> {
  return runInSlices(unsealSteps(seg, objectUntrusted));
}

/** The unsealing itself; yields the raw length of each block as it is decompressed. */
function* unsealSteps(seg: number, objectUntrusted: Uint8Array): Generator<number, Buffer> {
  const obj = Buffer.from(objectUntrusted.buffer, objectUntrusted.byteOffset, objectUntrusted.byteLength);
  if (obj.byteLength < HEAD_MAGIC.byteLength + SEALED_TRAILER_BYTES || !obj.subarray(0, 8).equals(HEAD_MAGIC)) throw corrupt(seg, "bad magic");
  const t = parseTrailer(seg, obj.byteLength, obj.subarray(obj.byteLength - SEALED_TRAILER_BYTES));
  const footer = parseFooter(seg, obj.subarray(t.off, t.off + t.len), t.crc);
  const raw = Buffer.allocUnsafe(footer.rawBytes);
  segmentHeader(seg).copy(raw, 0);
  let expect = SEGMENT_HEADER_BYTES;
  for (const b of footer.blocks) {
    if (b.raw !== expect || b.off + b.len > t.off) throw corrupt(seg, "block index is not contiguous");
    openBlock(seg, b, obj.subarray(b.off, b.off + b.len)).copy(raw, b.raw);
    expect = b.raw + b.rawLen;
    yield b.rawLen;
  }
  if (expect !== footer.rawBytes) throw corrupt(seg, "blocks do not cover the segment");
  return raw;
}

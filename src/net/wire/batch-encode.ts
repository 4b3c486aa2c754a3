/**
 * The encoder of streamed reply batches (`{ s, w, ...extra, items: [...] }`, wire-codec.ts), the
 * server's hottest encode: a getAll of 50,000 messages encodes 50,000 item maps. cbor-x walks
 * each item generically (and grows and copies its working buffer); here each item map is written
 * straight into one buffer of the frame's exact size, in two passes (sizes, then bytes).
 *
 * Invariant: the bytes decode (cbor-x, wire-codec.ts `decodeUntrusted`) to the same value as
 * `encode(frame)`, field for field and in the same key order. Only the shapes a batch item
 * usually has are written here: maps whose values are non-negative integers (as cbor-x writes
 * them: the smallest unsigned integer below 2^32, a float64 above, which cbor-x decodes as the
 * same number), byte strings and text strings. Any other value (a headers map, a negative
 * number, undefined) is encoded by cbor-x and embedded as it is; an item that is not a plain
 * map is encoded by cbor-x whole. test/net/batch-encode.test.ts checks the equivalence.
 */
import { encode, isPlainMap, type WireMap } from "./wire-codec.js";

const NO_ITEMS: readonly unknown[] = [];

/** Encoded map keys by name: item maps use a handful of keys (seq, value, timestamp, ...). */
const keyBytes = new Map<string, Uint8Array>();
const KEY_CACHE_MAX = 64;

function keyOf(key: string): Uint8Array {
  let bytes = keyBytes.get(key);
  if (bytes === undefined) {
    bytes = encode(key).slice();
    if (keyBytes.size < KEY_CACHE_MAX) keyBytes.set(key, bytes);
  }
  return bytes;
}

/** Bytes of a CBOR header for length or value `n` (n < 2^32). */
function headerBytes(n: number): number {
  return n < 24 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 5;
}

/** Writes the header of major type `major` (already shifted: major << 5) for `n` < 2^32. */
function writeHeader(out: Buffer, at: number, major: number, n: number): number {
  if (n < 24) {
    out[at] = major | n;
    return at + 1;
  }
  if (n < 0x100) {
    out[at] = major | 24;
    out[at + 1] = n;
    return at + 2;
  }
  if (n < 0x10000) {
    out[at] = major | 25;
    out[at + 1] = n >>> 8;
    out[at + 2] = n & 0xff;
    return at + 3;
  }
  out[at] = major | 26;
  out[at + 1] = n >>> 24;
  out[at + 2] = (n >>> 16) & 0xff;
  out[at + 3] = (n >>> 8) & 0xff;
  out[at + 4] = n & 0xff;
  return at + 5;
}

const float = new Float64Array(1);
const floatBytes = new Uint8Array(float.buffer);
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * Encoded bytes of `v` when this encoder writes it itself (a non-negative safe integer, bytes,
 * a string), else -1 (cbor-x encodes it).
 */
function directBytes(v: unknown): number {
  if (typeof v === "number") {
    if (!Number.isSafeInteger(v) || v < 0) return -1;
    return v < 2 ** 32 ? headerBytes(v) : 9;
  }
  if (v instanceof Uint8Array) return headerBytes(v.byteLength) + v.byteLength;
  if (typeof v === "string") {
    const n = Buffer.byteLength(v);
    return headerBytes(n) + n;
  }
  return -1;
}

function writeDirect(out: Buffer, at: number, v: unknown): number {
  if (typeof v === "number") {
    if (v < 2 ** 32) return writeHeader(out, at, 0x00, v);
    // cbor-x writes integers from 2^32 on as float64 (and would decode a uint64 as a BigInt).
    float[0] = v;
    out[at] = 0xfb;
    for (let i = 0; i < 8; i++) out[at + 1 + i] = floatBytes[LITTLE_ENDIAN ? 7 - i : i]!;
    return at + 9;
  }
  if (typeof v === "string") {
    const n = Buffer.byteLength(v);
    at = writeHeader(out, at, 0x60, n);
    return at + out.write(v, at, n, "utf8");
  }
  const bytes = v as Uint8Array;
  at = writeHeader(out, at, 0x40, bytes.byteLength);
  out.set(bytes, at);
  return at + bytes.byteLength;
}

/**
 * Frames are cut from a shared slab, as cbor-x cuts its encodings from its working buffer: a
 * fresh allocation per frame costs a page fault per 4 KiB written (the allocator hands large
 * blocks back to the system), more than the encoding itself. A frame keeps its slab alive only
 * while the frame is in use (until nats.js has copied it out).
 */
const SLAB_BYTES = 1024 * 1024;
let slab = Buffer.allocUnsafeSlow(0);
let slabAt = 0;

function allocate(bytes: number): Buffer {
  // Small frames come from Node's own pool; large ones stand alone.
  if (bytes < 4096) return Buffer.allocUnsafe(bytes);
  if (bytes > SLAB_BYTES / 4) return Buffer.allocUnsafeSlow(bytes);
  if (slabAt + bytes > slab.byteLength) {
    slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
    slabAt = 0;
  }
  // Aligned to 8 bytes, as the next frame's start.
  const out = slab.subarray(slabAt, slabAt + bytes);
  slabAt += (bytes + 7) & ~7;
  return out;
}

/**
 * `encode({ ...head, items })`, written directly. `head` must not have an `items` key (the
 * batch's items go last, as in `ReplyStream.items`).
 */
export function encodeBatch(head: WireMap, items: readonly unknown[]): Uint8Array {
  // The head, with an empty array last: its final byte (0x80) is replaced by the items.
  const headBytes = encode({ ...head, items: NO_ITEMS });
  if (headBytes[headBytes.byteLength - 1] !== 0x80) throw new Error("encodeBatch: the items are not the frame's last field");
  // Pass 1: sizes; values cbor-x must encode are encoded now, in order, and kept for pass 2.
  const embedded: Uint8Array[] = [];
  let total = headBytes.byteLength - 1 + headerBytes(items.length);
  for (let i = 0; i < items.length; i++) {
    const item = items[i];
    if (!isPlainMap(item)) {
      const bytes = encode(item).slice();
      embedded.push(bytes);
      total += bytes.byteLength;
      continue;
    }
    let keys = 0;
    for (const k in item) {
      keys++;
      const v = item[k];
      const n = directBytes(v);
      if (n >= 0) total += keyOf(k).byteLength + n;
      else {
        const bytes = encode(v).slice();
        embedded.push(bytes);
        total += keyOf(k).byteLength + bytes.byteLength;
      }
    }
    total += keys < 0x10000 ? 3 : 5;
  }
  // Pass 2: the bytes.
  const out = allocate(total);
  out.set(headBytes.subarray(0, headBytes.byteLength - 1), 0);
  let at = writeHeader(out, headBytes.byteLength - 1, 0x80, items.length);
  let e = 0;
  for (let i = 0; i < items.length; i++) {
    const item = items[i];
    if (!isPlainMap(item)) {
      const bytes = embedded[e++]!;
      out.set(bytes, at);
      at += bytes.byteLength;
      continue;
    }
    let keys = 0;
    for (const _k in item) keys++;
    // As cbor-x does: a map's length always in two bytes (or four), so the bytes are the same.
    if (keys < 0x10000) {
      out[at] = 0xb9;
      out[at + 1] = keys >>> 8;
      out[at + 2] = keys & 0xff;
      at += 3;
    } else at = writeHeader(out, at, 0xa0, keys);
    for (const k in item) {
      // Byte by byte: TypedArray#set costs more than the copy for a few bytes.
      const key = keyOf(k);
      for (let j = 0; j < key.length; j++) out[at + j] = key[j]!;
      at += key.length;
      const v = item[k];
      if (directBytes(v) >= 0) at = writeDirect(out, at, v);
      else {
        const bytes = embedded[e++]!;
        out.set(bytes, at);
        at += bytes.byteLength;
      }
    }
  }
  if (at !== total) throw new Error(`encodeBatch: wrote ${at} of ${total} bytes`);
  return out;
}

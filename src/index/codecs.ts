/**
 * Compact binary encodings of the index's per-record keys and values (the `seqs`, `revs` and
 * `kvs` databases hold one entry per message, revision or key, so their bytes are most of the
 * index's size).
 *
 * Keys keep LMDB's byte order equal to the tuple order: each unsigned integer is written as one
 * length byte (`LEN_BASE` + number of bytes) and then its minimal big-endian bytes, so a longer
 * number always sorts after a shorter one; a trailing string is written as its UTF-8 bytes. A
 * `[locId, seq]` key of a stream takes 4–6 bytes instead of lmdb-js's generic 19.
 * `LEN_BASE` keeps every key above lmdb-js's default iteration start (`0x05`).
 *
 * Values are tuples of non-negative integers, written as LEB128 varints.
 * The index is written only by this process, so decoding asserts rather than reporting CORRUPT:
 * a malformed entry is a bug, and a pointer it yields is still verified by the record's checksum.
 */
import { assert } from "../assert.js";

const LEN_BASE = 0x10;
const UINT_BYTES_MAX = 7;
const utf8 = new TextDecoder("utf-8", { fatal: true });

function writeUint(n: number, target: Uint8Array, at: number): number {
  assert(Number.isSafeInteger(n) && n >= 0, `index key component ${n} is not a non-negative safe integer`);
  let len = 0;
  for (let v = n; v > 0; v = Math.floor(v / 256)) len++;
  target[at] = LEN_BASE + len;
  for (let i = len, v = n; i > 0; i--, v = Math.floor(v / 256)) target[at + i] = v % 256;
  return at + 1 + len;
}

function readUint(source: Uint8Array, at: number, end: number): [value: number, next: number] {
  const len = source[at]! - LEN_BASE;
  assert(len >= 0 && len <= UINT_BYTES_MAX && at + 1 + len <= end, "malformed index key");
  let v = 0;
  for (let i = 1; i <= len; i++) v = v * 256 + source[at + i]!;
  return [v, at + 1 + len];
}

/**
 * The exclusive end of a range over all `[locId, …]` keys of one location: the first key of the
 * next location id, below which every key of `locId` sorts whatever its second part (even one at
 * or past 2^53 − 1, where `seq + 1` would no longer be exact).
 */
export function locationEnd(locId: number): [number, number] {
  return [locId + 1, 0];
}

/** lmdb-js key encoder for `[uint, uint]` keys. Raw byte keys (lmdb-js's defaults) pass through. */
export const uintPairKey = {
  writeKey(key: unknown, target: Uint8Array, start: number): number {
    if (key instanceof Uint8Array) {
      target.set(key, start);
      return start + key.byteLength;
    }
    const [a, b] = key as [number, number];
    return writeUint(b, target, writeUint(a, target, start));
  },
  readKey(source: Uint8Array, start: number, end: number): [number, number] {
    const [a, at] = readUint(source, start, end);
    const [b, next] = readUint(source, at, end);
    assert(next === end, "malformed index key");
    return [a, b];
  },
};

/** lmdb-js key encoder for `[uint, string]` keys (the string last, as UTF-8). */
export const uintStringKey = {
  writeKey(key: unknown, target: Uint8Array, start: number): number {
    if (key instanceof Uint8Array) {
      target.set(key, start);
      return start + key.byteLength;
    }
    const [a, s] = key as [number, string];
    const at = writeUint(a, target, start);
    return at + encodeInto(s, target, at);
  },
  readKey(source: Uint8Array, start: number, end: number): [number, string] {
    const [a, at] = readUint(source, start, end);
    return [a, utf8.decode(source.subarray(at, end))];
  },
};

const utf8Encoder = new TextEncoder();

/** Writes `s` as UTF-8; a RangeError when it does not fit makes lmdb-js retry with more room. */
function encodeInto(s: string, target: Uint8Array, at: number): number {
  const { read, written } = utf8Encoder.encodeInto(s, target.subarray(at));
  if (read !== s.length) throw new RangeError(`index key does not fit in ${target.byteLength - at} bytes`);
  return written;
}

function varintBytes(n: number): number {
  let len = 1;
  for (let v = n; v >= 128; v = Math.floor(v / 128)) len++;
  return len;
}

/** lmdb-js value encoder for tuples of non-negative integers (LEB128 varints). */
export const uintTupleValue = {
  encode(values: readonly number[]): Buffer {
    let size = 0;
    for (const n of values) {
      assert(Number.isSafeInteger(n) && n >= 0, `index value ${n} is not a non-negative safe integer`);
      size += varintBytes(n);
    }
    const out = Buffer.allocUnsafe(size);
    let at = 0;
    for (const n of values) {
      let v = n;
      while (v >= 128) {
        out[at++] = (v % 128) | 0x80;
        v = Math.floor(v / 128);
      }
      out[at++] = v;
    }
    return out;
  },
  /** lmdb-js passes a reused buffer whose `length` (not `byteLength`) is the value's size. */
  decode(source: Uint8Array): number[] {
    const out: number[] = [];
    const end = source.length;
    let at = 0;
    while (at < end) {
      let v = 0;
      let scale = 1;
      for (;;) {
        const b = at < end ? source[at++] : undefined;
        assert(b !== undefined && scale <= 2 ** 49, "malformed index value");
        v += (b & 0x7f) * scale;
        if (b < 0x80) break;
        scale *= 128;
      }
      out.push(v);
    }
    return out;
  },
};

/**
 * A fast path of `decodeRecord` (record.ts) for the record a stream scan reads 50,000 times in a
 * row: a stream set record of a known location with an inline value and no optional fields,
 * `[1, loc, seq, rev - seq, ts, value]`. It reads the CBOR bytes in place (no cbor-x decode, no
 * intermediate array) and compares the location's bytes instead of decoding them.
 *
 * Invariant: it returns exactly what `decodeRecord(body)` returns, or undefined when the bytes
 * are anything else (another record type, optional fields, another location, an encoding it
 * does not read, a malformed or trailing byte): the caller then runs `decodeRecord`, which
 * classifies them as it always has (CORRUPT for damage). It never accepts what decodeRecord
 * would reject. test/log/record-fast.test.ts checks both directions on random and damaged
 * records.
 */
import type { StreamSetRecord } from "./record.js";

/**
 * The location's name as UTF-8, for comparing with a record's bytes; undefined for a name that
 * UTF-8 does not carry as it is (a lone surrogate), whose bytes would decode to another name.
 */
export function locationBytes(location: string): Buffer | undefined {
  const bytes = Buffer.from(location, "utf8");
  return bytes.toString("utf8") === location ? bytes : undefined;
}

/**
 * The record in `body` when it is location `loc`'s (`locBytes`: its UTF-8 bytes) stream set
 * record of six fields; else undefined.
 */
export function decodeStreamSetFast(body: Uint8Array, loc: string, locBytes: Uint8Array): StreamSetRecord | undefined {
  const end = body.byteLength;
  // [ of 6 items, the type tag 1, then loc as a text string ]
  if (end < 2 || body[0] !== 0x86 || body[1] !== 0x01) return undefined;
  let at = 2;
  const locHead = body[at]!;
  if (locHead >> 5 !== 3) return undefined;
  const locLen = length(body, at);
  if (locLen < 0) return undefined;
  at += headLength(locHead);
  if (locLen !== locBytes.byteLength || at + locLen > end) return undefined;
  for (let i = 0; i < locLen; i++) if (body[at + i] !== locBytes[i]) return undefined;
  at += locLen;
  // seq, rev - seq, ts
  const seq = readInt(body, at);
  if (seq === undefined || seq < 0) return undefined;
  at = next;
  const delta = readInt(body, at);
  if (delta === undefined) return undefined;
  at = next;
  const rev = seq + delta;
  if (!Number.isSafeInteger(rev) || rev < 0) return undefined;
  const ts = readInt(body, at);
  if (ts === undefined || ts < 0) return undefined;
  at = next;
  // The value: a byte string of definite length, ending the body exactly.
  if (at >= end || body[at]! >> 5 !== 2) return undefined;
  const valueLen = length(body, at);
  if (valueLen < 0) return undefined;
  at += headLength(body[at]!);
  if (at + valueLen !== end) return undefined;
  const value = new Uint8Array(body.buffer, body.byteOffset + at, valueLen);
  return { t: "sset", loc, seq, rev, ts, value, size: valueLen };
}

/** Bytes of a CBOR head whose additional information is in `head` (0..26 only). */
function headLength(head: number): number {
  const ai = head & 0x1f;
  return ai < 24 ? 1 : ai === 24 ? 2 : ai === 25 ? 3 : 5;
}

/** The argument of the CBOR head at `at` (additional information 0..26), or -1. */
function length(body: Uint8Array, at: number): number {
  const ai = body[at]! & 0x1f;
  if (ai < 24) return ai;
  const n = ai === 24 ? 1 : ai === 25 ? 2 : ai === 26 ? 4 : 0;
  if (n === 0 || at + 1 + n > body.byteLength) return -1;
  let v = 0;
  for (let i = 1; i <= n; i++) v = v * 256 + body[at + i]!;
  return v;
}

/** Where the integer read last ends (readInt's second result, without an allocation). */
let next = 0;

const float = new Float64Array(1);
const floatBytes = new Uint8Array(float.buffer);
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/**
 * The integer at `at` as cbor-x decodes it to a safe integer: an unsigned or negative integer
 * of up to 4 bytes of argument, or a float64 holding a safe integer (how cbor-x writes integers
 * from 2^32 on). Undefined for anything else (cbor-x decodes 8-byte integers as BigInts, and
 * decodeRecord rejects those).
 */
function readInt(body: Uint8Array, at: number): number | undefined {
  if (at >= body.byteLength) return undefined;
  const head = body[at]!;
  const major = head >> 5;
  if (major === 0 || major === 1) {
    const v = length(body, at);
    if (v < 0) return undefined;
    next = at + headLength(head);
    return major === 0 ? v : -1 - v;
  }
  if (head !== 0xfb || at + 9 > body.byteLength) return undefined;
  for (let i = 0; i < 8; i++) floatBytes[LITTLE_ENDIAN ? 7 - i : i] = body[at + 1 + i]!;
  const v = float[0]!;
  if (!Number.isSafeInteger(v)) return undefined;
  next = at + 9;
  // -0 is an integer to Number.isSafeInteger; cbor-x gives -0 too, and int() accepts it (-0 < 0 is false).
  return v;
}

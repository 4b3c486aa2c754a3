/**
 * CBOR encoding of every body on the wire, and the frames replies are made of.
 *
 * Requests are CBOR maps with an `op` field (see server/server-handlers.ts for the ops). Replies to a
 * request's reply subject are CBOR maps of one of these shapes (errors travel as headers instead,
 * see wire-errors.ts):
 *
 *   { ok: result }                          the final result (null for "absent")
 *   { up: id, grant: n }                    upload flow control: chunks 0..n-1 may be sent
 *   { s: id, w: W, items: [...], base }     one batch of a streamed reply (getAll, keys)
 *   { s: id, w: W, end: info }              end of a streamed reply
 *   { s: id, w: W, part: k, of?, last, data } part k of a frame too large for one message;
 *                                           part 0 carries `of`, the frame's total bytes
 *
 * `s` names a reply stream (server-generated, unguessable); every batch and part of it uses one
 * credit, and the client grants more with a `credit` request (`n` = messages consumed so far,
 * sent every W/2 messages), so the server never has more than W messages of one stream in flight.
 * A final result too large for one message (a 50 MiB get) travels as the parts of `{ ok }`.
 *
 * Decoding is for untrusted bytes: malformed CBOR, trailing bytes and anything that is not a plain
 * map become INVALID_ARGUMENT; cbor-x bounds allocations by the input size.
 */
import { Decoder, Encoder } from "cbor-x";
import { StrataError } from "../../errors.js";

const encoder = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });
const decoder = new Decoder({ useRecords: false, mapsAsObjects: true });

export type WireMap = Record<string, unknown>;

/** Past this, an encode leaves cbor-x's working buffer oversized (see `encode`). */
const LARGE_ENCODE_BYTES = 256 * 1024;
const WORK_BUFFER_BYTES = 64 * 1024;

export function encode(value: unknown): Uint8Array {
  const bytes = encoder.encode(value);
  if (bytes.byteLength > LARGE_ENCODE_BYTES) {
    // cbor-x keeps encoding into the buffer it last grew, and replaces a full one with another of
    // the same size: after one 50 MiB reply every later message would be cut from (and keep
    // alive) a 60 MiB buffer. Hand it a fresh small one; `bytes` keeps the large one alive only
    // as long as it is itself in use.
    (encoder as unknown as { useBuffer(b: Uint8Array): void }).useBuffer(Buffer.allocUnsafeSlow(WORK_BUFFER_BYTES));
  }
  return bytes;
}

const EMPTY = new Uint8Array(0);

/**
 * Encodes a frame whose last field, at every level, is the byte string `tail`, without copying
 * `tail`: returns buffers whose concatenation is the frame's CBOR. Maps and arrays here have
 * definite lengths, so nothing follows the last item; encoding with an empty byte string (0x40)
 * and swapping that byte for the real header gives the same bytes as encoding the whole.
 */
export function encodeWithTail(build: (tail: Uint8Array) => unknown, tail: Uint8Array): Uint8Array[] {
  const withEmpty = encode(build(EMPTY));
  if (withEmpty[withEmpty.byteLength - 1] !== 0x40) throw new Error("encodeWithTail: the byte string is not the frame's last item");
  return [withEmpty.subarray(0, withEmpty.byteLength - 1), byteStringHeader(tail.byteLength), tail];
}

/** The CBOR header of a byte string (major type 2) of `n` bytes. */
export function byteStringHeader(n: number): Uint8Array {
  if (n < 24) return new Uint8Array([0x40 + n]);
  if (n < 0x100) return new Uint8Array([0x58, n]);
  if (n < 0x10000) return new Uint8Array([0x59, n >> 8, n & 0xff]);
  const out = Buffer.alloc(n < 2 ** 32 ? 5 : 9);
  if (n < 2 ** 32) {
    out[0] = 0x5a;
    out.writeUInt32BE(n, 1);
  } else {
    out[0] = 0x5b;
    out.writeBigUInt64BE(BigInt(n), 1);
  }
  return out;
}

/** The CBOR header of an array (major type 4) of `n` items. */
export function arrayHeader(n: number): Uint8Array {
  if (n < 24) return new Uint8Array([0x80 + n]);
  if (n < 0x100) return new Uint8Array([0x98, n]);
  if (n < 0x10000) return new Uint8Array([0x99, n >> 8, n & 0xff]);
  const out = Buffer.alloc(5);
  out[0] = 0x9a;
  out.writeUInt32BE(n, 1);
  return out;
}

/** One CBOR array made of items encoded separately (no re-encoding, one copy). */
export function joinArray(items: readonly Uint8Array[]): Uint8Array {
  return Buffer.concat([arrayHeader(items.length), ...items]);
}

export function decodeUntrusted(bytes: Uint8Array, what: string): unknown {
  if (bytes.byteLength === 0) throw new StrataError("INVALID_ARGUMENT", `${what} is empty; expected a CBOR map`);
  try {
    return decoder.decode(bytes);
  } catch (err) {
    throw new StrataError("INVALID_ARGUMENT", `${what} is not valid CBOR: ${(err as Error).message}`, { cause: err });
  }
}

export function isPlainMap(value: unknown): value is WireMap {
  if (value === null || typeof value !== "object" || Array.isArray(value) || value instanceof Uint8Array) return false;
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/** Decodes untrusted bytes that must hold a CBOR map. */
export function decodeMap(bytes: Uint8Array, what: string): WireMap {
  const value = decodeUntrusted(bytes, what);
  if (!isPlainMap(value)) throw new StrataError("INVALID_ARGUMENT", `${what} must be a CBOR map with an "op" field`);
  return value;
}

/**
 * An upper bound of a value's CBOR size, to fill batches without encoding twice. Only a hint:
 * a frame that still turns out too large is sent as parts.
 */
export function estimateBytes(value: unknown, depth = 0): number {
  if (value === null || value === undefined || typeof value === "boolean") return 1;
  if (typeof value === "number") return 9;
  if (typeof value === "string") return value.length * 3 + 5;
  if (value instanceof Uint8Array) return value.byteLength + 5;
  if (depth > 8) return encode(value).byteLength;
  if (Array.isArray(value)) return value.reduce((n: number, v) => n + estimateBytes(v, depth + 1), 5);
  if (typeof value === "object") {
    let n = 5;
    for (const [k, v] of Object.entries(value)) n += k.length * 3 + 5 + estimateBytes(v, depth + 1);
    return n;
  }
  return 16;
}

/** Copies a map without its undefined fields, so they take no bytes on the wire. */
export function compact<T extends object>(value: T): T {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) if (v !== undefined) out[k] = v;
  return out as T;
}

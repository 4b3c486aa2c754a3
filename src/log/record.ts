/**
 * The log records: what each change to a location looks like on disk, and its CBOR encoding.
 *
 * Every record carries everything needed to replay it into an empty index (location, seq or key,
 * the location revision it produced, timestamp), so the log alone is the truth. Records are CBOR
 * arrays with a leading type tag rather than maps: smaller, and faster to encode and decode.
 * `decodeRecord` takes untrusted bytes (already checksummed, but possibly written by another
 * version or damaged before checksumming) and checks every field's type.
 */
import { decode, encode } from "cbor-x";
import { StrataError } from "../errors.js";
import type { Headers } from "../types.js";

/** Where a framed record lives: segment id, byte offset of its frame, frame length. */
export interface Pointer {
  seg: number;
  off: number;
  len: number;
}

export interface StreamSetRecord {
  t: "sset";
  loc: string;
  seq: number;
  rev: number;
  ts: number;
  value: Uint8Array;
  headers?: Headers;
  msgId?: string;
  /** Commit time, kept with a msgId: the dedup window counts from it, not from `ts`. */
  at?: number;
  /** Set for a large value: the value is the concatenation of these chunk records. */
  chunks?: Pointer[];
  /** Length of the value in bytes (also for chunked values). */
  size: number;
}

export interface StreamDeleteRecord {
  t: "sdel";
  loc: string;
  seq: number;
  rev: number;
  ts: number;
}

export interface StreamDeleteAllRecord {
  t: "sdelall";
  loc: string;
  endSeq: number;
  rev: number;
  ts: number;
}

export interface KvSetRecord {
  t: "kset";
  loc: string;
  key: string;
  rev: number;
  ts: number;
  value: Uint8Array;
  headers?: Headers;
  expiresAt?: number;
  chunks?: Pointer[];
  size: number;
}

export interface KvDeleteRecord {
  t: "kdel";
  loc: string;
  key: string;
  rev: number;
  ts: number;
  /** True when the delete is a TTL expiry rather than a caller's delete. */
  expired?: boolean;
}

/** One piece of a large value, made visible only by the set record that lists it. */
export interface ChunkRecord {
  t: "chunk";
  data: Uint8Array;
}

export type LocationRecord = StreamSetRecord | StreamDeleteRecord | StreamDeleteAllRecord | KvSetRecord | KvDeleteRecord;
export type LogRecord = LocationRecord | ChunkRecord;

const TAG = { sset: 1, sdel: 2, sdelall: 3, kset: 4, kdel: 5, chunk: 6 } as const;
const EMPTY = new Uint8Array(0);

function ptrTuple(p: Pointer): [number, number, number] {
  return [p.seg, p.off, p.len];
}

export function encodeRecord(r: LogRecord): Uint8Array {
  switch (r.t) {
    case "sset":
      return encode([TAG.sset, r.loc, r.seq, r.rev, r.ts, r.chunks ? null : r.value, r.headers ?? null, r.msgId ?? null, r.chunks?.map(ptrTuple) ?? null, r.size, r.at ?? null]);
    case "sdel":
      return encode([TAG.sdel, r.loc, r.seq, r.rev, r.ts]);
    case "sdelall":
      return encode([TAG.sdelall, r.loc, r.endSeq, r.rev, r.ts]);
    case "kset":
      return encode([TAG.kset, r.loc, r.key, r.rev, r.ts, r.chunks ? null : r.value, r.headers ?? null, r.expiresAt ?? null, r.chunks?.map(ptrTuple) ?? null, r.size]);
    case "kdel":
      return encode([TAG.kdel, r.loc, r.key, r.rev, r.ts, r.expired ? 1 : 0]);
    case "chunk":
      return encode([TAG.chunk, r.data]);
  }
}

function corrupt(why: string): StrataError {
  return new StrataError("CORRUPT", `log record is malformed: ${why}. The segment is damaged; restore it from the object store or run \`strata reindex\`.`);
}

function int(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw corrupt(`${what} is not a non-negative integer`);
  return v;
}

function str(v: unknown, what: string): string {
  if (typeof v !== "string") throw corrupt(`${what} is not a string`);
  return v;
}

function bytes(v: unknown, what: string): Uint8Array {
  if (v === null || v === undefined) return EMPTY;
  if (!(v instanceof Uint8Array)) throw corrupt(`${what} is not a byte string`);
  return v;
}

function headers(v: unknown): Headers | undefined {
  if (v === null || v === undefined) return undefined;
  if (typeof v !== "object" || ![Object.prototype, null].includes(Object.getPrototypeOf(v))) throw corrupt("headers is not a map");
  for (const value of Object.values(v as object)) if (typeof value !== "string") throw corrupt("a header value is not a string");
  return v as Headers;
}

function chunks(v: unknown): Pointer[] | undefined {
  if (v === null || v === undefined) return undefined;
  if (!Array.isArray(v)) throw corrupt("chunks is not an array");
  return v.map((t: unknown) => {
    if (!Array.isArray(t) || t.length !== 3) throw corrupt("a chunk pointer is not a triple");
    return { seg: int(t[0], "chunk seg"), off: int(t[1], "chunk off"), len: int(t[2], "chunk len") };
  });
}

export function decodeRecord(bodyUntrusted: Uint8Array): LogRecord {
  let a: unknown;
  try {
    a = decode(bodyUntrusted);
  } catch (cause) {
    throw corrupt(`CBOR does not decode (${(cause as Error).message})`);
  }
  if (!Array.isArray(a) || a.length < 2) throw corrupt("not a tagged array");
  switch (a[0]) {
    case TAG.sset: {
      const r: StreamSetRecord = { t: "sset", loc: str(a[1], "loc"), seq: int(a[2], "seq"), rev: int(a[3], "rev"), ts: int(a[4], "ts"), value: bytes(a[5], "value"), size: int(a[9], "size") };
      const h = headers(a[6]);
      if (h) r.headers = h;
      if (a[7] !== null && a[7] !== undefined) r.msgId = str(a[7], "msgId");
      const c = chunks(a[8]);
      if (c) r.chunks = c;
      if (a[10] !== null && a[10] !== undefined) r.at = int(a[10], "at");
      return r;
    }
    case TAG.sdel:
      return { t: "sdel", loc: str(a[1], "loc"), seq: int(a[2], "seq"), rev: int(a[3], "rev"), ts: int(a[4], "ts") };
    case TAG.sdelall:
      return { t: "sdelall", loc: str(a[1], "loc"), endSeq: int(a[2], "endSeq"), rev: int(a[3], "rev"), ts: int(a[4], "ts") };
    case TAG.kset: {
      const r: KvSetRecord = { t: "kset", loc: str(a[1], "loc"), key: str(a[2], "key"), rev: int(a[3], "rev"), ts: int(a[4], "ts"), value: bytes(a[5], "value"), size: int(a[9], "size") };
      const h = headers(a[6]);
      if (h) r.headers = h;
      if (a[7] !== null && a[7] !== undefined) r.expiresAt = int(a[7], "expiresAt");
      const c = chunks(a[8]);
      if (c) r.chunks = c;
      return r;
    }
    case TAG.kdel: {
      const r: KvDeleteRecord = { t: "kdel", loc: str(a[1], "loc"), key: str(a[2], "key"), rev: int(a[3], "rev"), ts: int(a[4], "ts") };
      if (a[5] === 1) r.expired = true;
      return r;
    }
    case TAG.chunk:
      return { t: "chunk", data: bytes(a[1], "data") };
    default:
      throw corrupt(`unknown record type ${String(a[0])}`);
  }
}

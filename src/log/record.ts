/**
 * The log records: what each change to a location looks like on disk, and its CBOR encoding.
 *
 * Every record carries everything needed to replay it into an empty index (location, seq or key,
 * the location revision it produced, timestamp), so the log alone is the truth. Records are CBOR
 * arrays with a leading type tag rather than maps: smaller, and faster to encode and decode; absent
 * optional fields at the end are left out, and fields derivable from others are not stored.
 * `decodeRecord` takes untrusted bytes (already checksummed, but possibly written by another
 * version or damaged before checksumming) and checks every field's type.
 */
import { decode, encode } from "cbor-x";
import { assert } from "../assert.js";
import { StrataError } from "../errors.js";
import type { Headers, Kind, LocationLimits } from "../types.js";
import { checkLocationLimits } from "../validate.js";

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

/**
 * A takeover: the location was reset in this index and replaced by its state in server `from`'s
 * object-store data up to segment `cut` (docs/failover.md; ../tier/takeover.ts). It carries no
 * rows: replay redoes the import from the object store. `ckpt` is the key of the checkpoint of
 * `from` it started from (absent: it replayed all of `from`'s segments), `epoch` the coordinator's
 * epoch it was granted under, `rev` the location's revision once imported (0: it was empty).
 * It is not a change of the location: it takes no revision of its own.
 */
export interface ImportRecord {
  t: "import";
  loc: string;
  from: string;
  cut: number;
  epoch: number;
  ckpt?: string;
  rev?: number;
}

/**
 * A location's limits (`config`, docs/compaction.md "Per-location limits"): the whole
 * configuration, normalised. Like `import` it takes no revision: it is not a change a watcher
 * sees; what it drops is written as its own `sdelall` right after it. `kind` creates the
 * location with that kind when it is new.
 */
export interface ConfigRecord {
  t: "config";
  loc: string;
  kind: Kind;
  ts: number;
  limits: LocationLimits;
}

export type LocationRecord = StreamSetRecord | StreamDeleteRecord | StreamDeleteAllRecord | KvSetRecord | KvDeleteRecord;
export type LogRecord = LocationRecord | ChunkRecord | ImportRecord | ConfigRecord;

const TAG = { sset: 1, sdel: 2, sdelall: 3, kset: 4, kdel: 5, chunk: 6, import: 7, config: 8 } as const;
const EMPTY = new Uint8Array(0);

/**
 * Largest array length of each record type. Optional fields come last and trailing absent ones
 * are not written, so a typical record carries no placeholder bytes.
 */
const FIELDS_MAX = { [TAG.sset]: 11, [TAG.sdel]: 5, [TAG.sdelall]: 5, [TAG.kset]: 10, [TAG.kdel]: 6, [TAG.chunk]: 2, [TAG.import]: 7, [TAG.config]: 5 } as const;

function ptrTuple(p: Pointer): [number, number, number] {
  return [p.seg, p.off, p.len];
}

/** Byte strings as Buffers: cbor-x tags other typed arrays, which costs two bytes a record. */
function raw(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

/** Drops trailing absent fields (null or undefined). */
function trimmed(fields: unknown[]): unknown[] {
  let n = fields.length;
  while (n > 0 && (fields[n - 1] === null || fields[n - 1] === undefined)) n--;
  return n === fields.length ? fields : fields.slice(0, n);
}

/**
 * Layouts (absent optional fields are null, trailing ones omitted):
 * - sset:    [1, loc, seq, rev - seq, ts, value, headers, msgId, chunks, size, at - ts]
 * - sdel:    [2, loc, seq, rev - seq, ts]
 * - sdelall: [3, loc, endSeq, rev, ts]
 * - kset:    [4, loc, key, rev, ts, value, headers, expiresAt, chunks, size]
 * - kdel:    [5, loc, key, rev, ts, 1 if expired]
 * - chunk:   [6, data]
 * - import:  [7, loc, from, cut, epoch, ckpt, rev]
 * - config:  [8, loc, kind, ts, limits] (kind "stream" | "kv"; limits a map of the set fields)
 * A stream record stores its revision as the difference from its seq (small for appends), and
 * `size` only for a chunked value: an inline value's size is its length.
 */
export function encodeRecord(r: LogRecord): Uint8Array {
  switch (r.t) {
    case "sset": {
      assert(r.chunks !== undefined || r.size === r.value.byteLength, "an inline value's size is its length");
      const at = r.at === undefined ? null : r.at - r.ts;
      return encode(trimmed([TAG.sset, r.loc, r.seq, r.rev - r.seq, r.ts, r.chunks ? null : raw(r.value), r.headers ?? null, r.msgId ?? null, r.chunks?.map(ptrTuple) ?? null, r.chunks ? r.size : null, at]));
    }
    case "sdel":
      return encode([TAG.sdel, r.loc, r.seq, r.rev - r.seq, r.ts]);
    case "sdelall":
      return encode([TAG.sdelall, r.loc, r.endSeq, r.rev, r.ts]);
    case "kset":
      assert(r.chunks !== undefined || r.size === r.value.byteLength, "an inline value's size is its length");
      return encode(trimmed([TAG.kset, r.loc, r.key, r.rev, r.ts, r.chunks ? null : raw(r.value), r.headers ?? null, r.expiresAt ?? null, r.chunks?.map(ptrTuple) ?? null, r.chunks ? r.size : null]));
    case "kdel":
      return encode(r.expired ? [TAG.kdel, r.loc, r.key, r.rev, r.ts, 1] : [TAG.kdel, r.loc, r.key, r.rev, r.ts]);
    case "chunk":
      return encode([TAG.chunk, raw(r.data)]);
    case "import":
      return encode(trimmed([TAG.import, r.loc, r.from, r.cut, r.epoch, r.ckpt ?? null, r.rev ?? null]));
    case "config":
      return encode([TAG.config, r.loc, r.kind, r.ts, { ...r.limits }]);
  }
}

function corrupt(why: string): StrataError {
  return new StrataError("CORRUPT", `log record is malformed: ${why}. The segment is damaged; restore it from the object store or run \`strata reindex\`.`);
}

function int(v: unknown, what: string): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw corrupt(`${what} is not a non-negative integer`);
  return v;
}

/** `base + delta` for a field stored as a (possibly negative) difference. */
function offset(base: number, delta: unknown, what: string): number {
  if (typeof delta !== "number" || !Number.isSafeInteger(delta)) throw corrupt(`${what} is not an integer`);
  return int(base + delta, what);
}

function str(v: unknown, what: string): string {
  if (typeof v !== "string") throw corrupt(`${what} is not a string`);
  return v;
}

function absent(v: unknown): v is null | undefined {
  return v === null || v === undefined;
}

/** A byte string as a plain Uint8Array view (cbor-x gives Buffers; reads return Uint8Arrays). */
function plain(v: unknown, what: string): Uint8Array {
  if (!(v instanceof Uint8Array)) throw corrupt(`${what} is not a byte string`);
  return v.constructor === Uint8Array ? v : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

function headers(v: unknown): Headers | undefined {
  if (absent(v)) return undefined;
  if (typeof v !== "object" || ![Object.prototype, null].includes(Object.getPrototypeOf(v))) throw corrupt("headers is not a map");
  for (const value of Object.values(v as object)) if (typeof value !== "string") throw corrupt("a header value is not a string");
  return v as Headers;
}

function chunks(v: unknown): Pointer[] | undefined {
  if (absent(v)) return undefined;
  if (!Array.isArray(v) || v.length === 0) throw corrupt("chunks is not a non-empty array");
  return v.map((t: unknown) => {
    if (!Array.isArray(t) || t.length !== 3) throw corrupt("a chunk pointer is not a triple");
    return { seg: int(t[0], "chunk seg"), off: int(t[1], "chunk off"), len: int(t[2], "chunk len") };
  });
}

/** The value fields of a set record: either inline bytes (size = length) or chunks and a size. */
function valueFields(a: unknown[], at: number): { value: Uint8Array; size: number; chunks?: Pointer[] } {
  const c = chunks(a[at + 3]);
  if (!c) {
    if (!absent(a[at + 4])) throw corrupt("an inline value has a size field");
    const value = plain(a[at], "value");
    return { value, size: value.byteLength };
  }
  if (!absent(a[at])) throw corrupt("a chunked value also has inline bytes");
  return { value: EMPTY, size: int(a[at + 4], "size"), chunks: c };
}

export function decodeRecord(bodyUntrusted: Uint8Array): LogRecord {
  let a: unknown;
  try {
    a = decode(bodyUntrusted);
  } catch (cause) {
    throw corrupt(`CBOR does not decode (${(cause as Error).message})`);
  }
  if (!Array.isArray(a) || a.length < 2) throw corrupt("not a tagged array");
  // Only a number is looked up: any other value as a property key is converted first, and a map
  // such as { toString: 0 } makes that conversion throw a TypeError instead of CORRUPT.
  const max = typeof a[0] === "number" && Object.hasOwn(FIELDS_MAX, a[0]) ? (FIELDS_MAX as Record<number, number>)[a[0]] : undefined;
  if (max === undefined) throw corrupt(`unknown record type ${typeof a[0] === "number" ? a[0] : `(a ${typeof a[0]})`}`);
  if (a.length > max || (a[0] !== TAG.chunk && a.length < 5)) throw corrupt(`a record of type ${String(a[0])} has ${a.length} fields`);
  if (a.length > 2 && absent(a[a.length - 1])) throw corrupt("a trailing field is absent rather than omitted");
  switch (a[0]) {
    case TAG.sset: {
      const seq = int(a[2], "seq");
      const ts = int(a[4], "ts");
      const r: StreamSetRecord = { t: "sset", loc: str(a[1], "loc"), seq, rev: offset(seq, a[3], "rev"), ts, ...valueFields(a, 5) };
      const h = headers(a[6]);
      if (h) r.headers = h;
      if (!absent(a[7])) r.msgId = str(a[7], "msgId");
      if (!absent(a[10])) r.at = offset(ts, a[10], "at");
      return r;
    }
    case TAG.sdel: {
      const seq = int(a[2], "seq");
      return { t: "sdel", loc: str(a[1], "loc"), seq, rev: offset(seq, a[3], "rev"), ts: int(a[4], "ts") };
    }
    case TAG.sdelall:
      return { t: "sdelall", loc: str(a[1], "loc"), endSeq: int(a[2], "endSeq"), rev: int(a[3], "rev"), ts: int(a[4], "ts") };
    case TAG.kset: {
      const r: KvSetRecord = { t: "kset", loc: str(a[1], "loc"), key: str(a[2], "key"), rev: int(a[3], "rev"), ts: int(a[4], "ts"), ...valueFields(a, 5) };
      const h = headers(a[6]);
      if (h) r.headers = h;
      if (!absent(a[7])) r.expiresAt = int(a[7], "expiresAt");
      return r;
    }
    case TAG.kdel: {
      const r: KvDeleteRecord = { t: "kdel", loc: str(a[1], "loc"), key: str(a[2], "key"), rev: int(a[3], "rev"), ts: int(a[4], "ts") };
      if (a.length === 6) {
        if (a[5] !== 1) throw corrupt("expired is not 1");
        r.expired = true;
      }
      return r;
    }
    case TAG.import: {
      const r: ImportRecord = { t: "import", loc: str(a[1], "loc"), from: str(a[2], "from"), cut: int(a[3], "cut"), epoch: int(a[4], "epoch") };
      if (r.loc === "" || r.from === "") throw corrupt("an import names no location or no server");
      if (!absent(a[5])) r.ckpt = str(a[5], "ckpt");
      if (!absent(a[6])) r.rev = int(a[6], "rev");
      return r;
    }
    case TAG.config: {
      if (a.length !== 5) throw corrupt(`a config record has ${a.length} fields`);
      const loc = str(a[1], "loc");
      if (loc === "") throw corrupt("a config names no location");
      if (a[2] !== "stream" && a[2] !== "kv") throw corrupt("config kind is not stream or kv");
      const checked = checkLocationLimits(a[4], a[2]);
      if ("problem" in checked) throw corrupt(`config limits: ${checked.problem}`);
      return { t: "config", loc, kind: a[2], ts: int(a[3], "ts"), limits: checked.limits };
    }
    default:
      return { t: "chunk", data: plain(a[1], "chunk data") };
  }
}

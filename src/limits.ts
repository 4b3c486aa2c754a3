/**
 * Every limit and default of Strata, in one place, with its unit last in the name.
 *
 * A `Store` (and the server and client built on it) takes a partial `Limits` and fills the rest
 * from `DEFAULT_LIMITS`; `resolveLimits` checks the relations between them once at startup, so a
 * configuration that could not work is refused before any data is touched.
 */
import { StrataError } from "./errors.js";

export interface Limits {
  /** A segment file is rolled once it would grow past this. */
  segmentBytesMax: number;
  /** Largest single framed log record; larger values are split into chunk records. */
  recordBytesMax: number;
  /** Size of each chunk record of a large value. */
  chunkBytes: number;
  /** Largest value accepted for a message or kv entry. */
  valueBytesMax: number;
  /** Largest encoded headers object of a message or kv entry. */
  headersBytesMax: number;
  /** Most headers on one message. */
  headersCountMax: number;
  /** Longest location path, in bytes. */
  locationBytesMax: number;
  /** Most `/`-separated segments in a location path. */
  locationSegmentsMax: number;
  /** Longest kv key, in bytes. */
  keyBytesMax: number;
  /** Longest exactly-once message id, in bytes. */
  msgIdBytesMax: number;
  /** How long a msgId is remembered for exactly-once appends. */
  dedupWindowMs: number;
  /** Most writes (records) committed together in one group commit. */
  commitBatchMax: number;
  /** Most bytes written together in one group commit. */
  commitBatchBytesMax: number;
  /** Most writes waiting to be committed; more are refused with UNAVAILABLE (back-pressure). */
  writeQueueMax: number;
  /** Most items in one setMany / appendMany call. */
  manyItemsMax: number;
  /** Index entries read per page while streaming getAll/keys (bounds their memory). */
  scanPageSize: number;
  /** Longest kv TTL. */
  ttlMsMax: number;
  /** How often expired kv keys are swept (turned into expiry records). */
  ttlSweepIntervalMs: number;
  /** Most expired keys turned into expiry records per sweep. */
  ttlSweepBatchMax: number;
  /** Most segment files kept open for reading at once. */
  openSegmentsMax: number;
  /** With `fsync: "interval"`, how often the active segment is fdatasync'd. */
  fsyncIntervalMs: number;
  /** A dirty active segment is sealed at least this often (the object-ack window). */
  sealIntervalMs: number;
  /** Budget of local segment files once segments are in the object store. */
  cacheBytes: number;
  /** Raw bytes of records per compressed block of a sealed segment (the unit of fault-in). */
  blockBytes: number;
  /** Memory for faulted-in blocks of evicted segments. */
  blockCacheBytes: number;
  /** Most sealed-segment footers kept in memory. */
  footerCacheMax: number;
  /** How long an `ack: "object"` write waits for its segment to reach the object store. */
  objectAckTimeoutMs: number;
  /** Longest pause between retries of a failed upload. */
  uploadRetryMaxMs: number;
  /** An index checkpoint is uploaded at least this often while there are writes. */
  checkpointIntervalMs: number;
  /** Index checkpoints kept in the object store (older ones are deleted). */
  checkpointsKept: number;
  /** On close, how long to wait for pending uploads before leaving them to the next start. */
  closeUploadWaitMs: number;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;

export const DEFAULT_LIMITS: Readonly<Limits> = Object.freeze({
  segmentBytesMax: 64 * MiB,
  recordBytesMax: 1 * MiB + 64 * KiB,
  chunkBytes: 1 * MiB,
  valueBytesMax: 1 * GiB,
  headersBytesMax: 64 * KiB,
  headersCountMax: 256,
  locationBytesMax: 255,
  locationSegmentsMax: 16,
  keyBytesMax: 1024,
  msgIdBytesMax: 256,
  dedupWindowMs: 2 * 60_000,
  commitBatchMax: 4096,
  commitBatchBytesMax: 16 * MiB,
  writeQueueMax: 100_000,
  manyItemsMax: 10_000,
  scanPageSize: 256,
  ttlMsMax: 10 * 365 * 24 * 3600_000,
  ttlSweepIntervalMs: 1000,
  ttlSweepBatchMax: 1000,
  openSegmentsMax: 64,
  fsyncIntervalMs: 1000,
  sealIntervalMs: 1000,
  cacheBytes: 10 * GiB,
  blockBytes: 64 * KiB,
  blockCacheBytes: 64 * MiB,
  footerCacheMax: 1024,
  objectAckTimeoutMs: 30_000,
  uploadRetryMaxMs: 5_000,
  checkpointIntervalMs: 60_000,
  checkpointsKept: 2,
  closeUploadWaitMs: 5_000,
});

/** Bytes a record needs besides its value and headers: framing, CBOR structure, location, key, msgId. */
export const RECORD_OVERHEAD_BYTES_MAX = 4 * KiB;

export function resolveLimits(partial: Partial<Limits> = {}): Limits {
  const limits: Limits = { ...DEFAULT_LIMITS };
  for (const [name, value] of Object.entries(partial)) {
    if (value === undefined) continue;
    if (!(name in DEFAULT_LIMITS)) {
      throw new StrataError("INVALID_ARGUMENT", `unknown limit "${name}"; known limits: ${Object.keys(DEFAULT_LIMITS).join(", ")}`);
    }
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0) {
      throw new StrataError("INVALID_ARGUMENT", `limit ${name} must be a positive integer, got ${String(value)}`);
    }
    (limits as unknown as Record<string, number>)[name] = value;
  }
  checkLimitRelations(limits);
  return limits;
}

/** The relations the engine relies on; refuses a configuration that breaks any of them. */
export function checkLimitRelations(l: Limits): void {
  const rules: Array<[boolean, string]> = [
    [l.chunkBytes + RECORD_OVERHEAD_BYTES_MAX <= l.recordBytesMax, "chunkBytes + 4 KiB must be <= recordBytesMax"],
    [l.headersBytesMax + RECORD_OVERHEAD_BYTES_MAX <= l.recordBytesMax, "headersBytesMax + 4 KiB must be <= recordBytesMax"],
    [l.recordBytesMax * 2 <= l.segmentBytesMax, "recordBytesMax must be at most half of segmentBytesMax"],
    [l.commitBatchBytesMax >= l.recordBytesMax, "commitBatchBytesMax must be >= recordBytesMax"],
    [l.locationBytesMax <= 1024, "locationBytesMax must be <= 1024 (it is part of index keys)"],
    [l.keyBytesMax <= 1024, "keyBytesMax must be <= 1024 (it is part of index keys)"],
    [l.msgIdBytesMax <= 1024, "msgIdBytesMax must be <= 1024 (it is part of index keys)"],
    [l.scanPageSize <= 100_000, "scanPageSize must be <= 100000"],
    [l.blockCacheBytes >= l.blockBytes + l.recordBytesMax, "blockCacheBytes must hold at least one block (blockBytes + recordBytesMax)"],
    [l.objectAckTimeoutMs >= l.sealIntervalMs, "objectAckTimeoutMs must be >= sealIntervalMs"],
  ];
  const broken = rules.filter(([ok]) => !ok).map(([, why]) => why);
  if (broken.length > 0) {
    throw new StrataError("INVALID_ARGUMENT", `inconsistent limits: ${broken.join("; ")}`);
  }
}

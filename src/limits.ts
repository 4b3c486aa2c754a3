/**
 * Every limit and default of Strata, in one place, with its unit last in the name.
 *
 * Three groups: `Limits` bound the engine (a `Store`: record, value and batch sizes, windows,
 * caches), `NetLimits` what the NATS server side holds (upload and reply windows, sessions,
 * timeouts), `ClientLimits` the client library. Each takes a partial object and fills the rest
 * from its defaults; the `resolve…` functions check the relations between limits once at
 * startup, so a configuration that could not work is refused before any data is touched.
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
  /** Most locations whose metadata is cached in memory for reads (least-recently-used). */
  metaCacheMax: number;
  /**
   * Most bytes read with one read when a scan reads records that lie next to each other. The values
   * of such a run share its buffer, so one value kept by a caller keeps at most this much alive.
   */
  scanReadBytesMax: number;
  /** With `fsync: "interval"`, how often the active segment is fdatasync'd. */
  fsyncIntervalMs: number;
  /** A log write of at most this many bytes is made on the event loop (page cache copy); larger ones in the thread pool. */
  syncWriteBytesMax: number;
  /**
   * At fsync "always", a lone write's fdatasync (one write, nothing queued, at most
   * syncWriteBytesMax) is made on the event loop, which saves two thread hand-offs. When one takes
   * longer than this, lone writes' fdatasyncs go to the thread pool for `fsyncInlineOffMs`. 0: never
   * on the event loop.
   */
  fsyncInlineMaxMs: number;
  /** How long lone writes' fdatasyncs stay in the thread pool after one took over `fsyncInlineMaxMs`. */
  fsyncInlineOffMs: number;
  /**
   * Once the active segment holds this many bytes, the next segment file is prepared (zeroed and
   * made durable) in the background, so appends never grow a file (default segmentBytesMax / 8).
   */
  segmentPrepareAtBytes: number;
  /**
   * The same for a plain active segment (one without zeros ahead of its records: a new store's
   * first, or one made when no prepared file was ready): every append to it grows the file, and
   * its fdatasync then commits the file system's journal too (ext4 here: an ack at one request in
   * flight took 0.5-0.6 ms instead of 0.28), so it is left for a prepared file sooner. The lower
   * of this and segmentPrepareAtBytes applies.
   */
  segmentPreparePlainAtBytes: number;
  /**
   * The next segment is prepared only while the log's fdatasyncs cover at most this many bytes
   * each on average (over the last one to two seconds); above it the next segment is a plain file
   * (./log/prepare-policy.ts). Preparing saves a journal commit per fdatasync and costs a write of
   * zeros per byte, so it pays at one request in flight and not once many records share a sync
   * (many in flight, large values, fsync "interval"). 0: never prepare while appending.
   */
  segmentPrepareSyncBytesMax: number;
  /** Zeros written per write (each fdatasync'd) while a segment file is prepared. */
  segmentPrepareWriteBytes: number;
  /**
   * Share of the time (percent, 1-100) a preparation keeps the disk busy: after each write and
   * fdatasync of zeros it waits (100 - this) / this times as long, so the appends' fdatasyncs
   * queue behind at most one step of zeros, never a burst of them (back to back, 64 MiB of zeros
   * made the appends' fdatasyncs 2-3 times slower while they lasted). While the active segment
   * is plain (its appends grow the file) or has less than `segmentPrepareAtBytes` left, the steps
   * follow each other without a wait.
   */
  segmentPrepareDutyPercent: number;
  /** After a failed preparation (a full disk), the next attempt waits at least this long. */
  segmentPrepareRetryMs: number;
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
  /** Longest pause between attempts to index a durable batch while the index cannot be written. */
  indexRetryMaxMs: number;
  /** An index checkpoint is uploaded at least this often while there are writes. */
  checkpointIntervalMs: number;
  /** Index checkpoints kept in the object store (older ones are deleted). */
  checkpointsKept: number;
  /** On close, how long to wait for pending uploads before leaving them to the next start. */
  closeUploadWaitMs: number;
  /**
   * Takeover (tier/takeover.ts): disk bytes of other servers' index checkpoints kept opened between
   * imports (decompressed, under `<data>/import-tmp`), and memory for the scanned records (values
   * left out) of their segments; both kept at most `importCacheTtlMs` after their last use.
   */
  importCheckpointCacheBytes: number;
  importScanCacheBytes: number;
  importCacheTtlMs: number;
  /** How long an import retries an object store that is unreachable before it fails UNAVAILABLE. */
  importRetryMs: number;
  /**
   * A location's epoch lineage (index/lineage.ts): the [epoch, start revision] entries kept per
   * location, one per takeover along its chain of owners. Past it the two oldest are folded into
   * one (the lower start), so a watcher that was away longer rewinds further, never too little.
   */
  epochLineageMax: number;
  /**
   * Compaction (docs/compaction.md). A segment is a candidate once this fraction of its bytes is
   * dead (a fraction in (0, 1], the one limit that is not an integer).
   */
  compactDeadFractionMin: number;
  /** Adjacent sealed segments smaller than this are merged (default segmentBytesMax / 8). */
  compactSmallBytes: number;
  /** A run stops growing once its kept bytes reach this (default segmentBytesMax). */
  compactRunBytesMax: number;
  /** How often the background compactor looks for work. */
  compactIntervalMs: number;
  /** Bytes a compaction reads plus writes per second. */
  compactRateBytesPerSec: number;
  /** How long a compacted input is kept after the switch (readers in flight), before it may be deleted. */
  compactRetainMs: number;
  /**
   * Kept records a compaction's switch moves per index transaction (docs/compaction.md, step 4):
   * each chunk is its own exclusive section, so reads and writes run between chunks.
   */
  compactSwitchChunkRecords: number;
  /** Per-location limits (`config`): the largest `maxAgeMs` and `dedupWindowMs` a location may set. */
  configAgeMsMax: number;
  configDedupWindowMsMax: number;
  /** The maxAgeMs sweep: most locations looked at, and most messages read, per sweep (the rest wait for the next). */
  ageSweepLocationsMax: number;
  ageSweepMsgsMax: number;
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
  metaCacheMax: 65_536,
  scanReadBytesMax: 64 * KiB,
  fsyncIntervalMs: 1000,
  syncWriteBytesMax: 256 * KiB,
  fsyncInlineMaxMs: 20,
  fsyncInlineOffMs: 10_000,
  segmentPrepareAtBytes: 8 * MiB,
  segmentPreparePlainAtBytes: 1 * MiB,
  segmentPrepareSyncBytesMax: 64 * KiB,
  segmentPrepareWriteBytes: 256 * KiB,
  segmentPrepareDutyPercent: 25,
  segmentPrepareRetryMs: 1000,
  sealIntervalMs: 1000,
  cacheBytes: 10 * GiB,
  blockBytes: 64 * KiB,
  blockCacheBytes: 64 * MiB,
  footerCacheMax: 1024,
  objectAckTimeoutMs: 30_000,
  uploadRetryMaxMs: 5_000,
  indexRetryMaxMs: 1_000,
  checkpointIntervalMs: 60_000,
  checkpointsKept: 2,
  closeUploadWaitMs: 5_000,
  importCheckpointCacheBytes: 4 * GiB,
  importScanCacheBytes: 64 * MiB,
  importCacheTtlMs: 60_000,
  importRetryMs: 10_000,
  epochLineageMax: 64,
  compactDeadFractionMin: 0.5,
  compactSmallBytes: 8 * MiB,
  compactRunBytesMax: 64 * MiB,
  compactIntervalMs: 10_000,
  compactRateBytesPerSec: 16 * MiB,
  compactRetainMs: 60_000,
  compactSwitchChunkRecords: 1024,
  configAgeMsMax: 100 * 365 * 24 * 3600_000,
  configDedupWindowMsMax: 7 * 24 * 3600_000,
  ageSweepLocationsMax: 256,
  ageSweepMsgsMax: 4096,
});

/**
 * The largest stream seq and location revision Strata accepts or produces (2^48, about 2.8e14).
 * Not a tunable but part of the format: every seq and revision arithmetic inside the engine
 * (`seq + 1` of an append or a scan page, `endSeq + 1` of a deleteAll's index range, `rev + 1`)
 * must stay an exact safe integer and fit the index key codec, so the bound sits far inside 2^53
 * instead of at its edge. At a million appends a second a stream takes nine years to reach it.
 * Validated at every edge (validate.ts `validateSeq`, `validateSeqOrZero`).
 */
export const seqMax = 2 ** 48;

/** Bytes a record needs besides its value and headers: framing, CBOR structure, location, key, msgId. */
export const RECORD_OVERHEAD_BYTES_MAX = 4 * KiB;

/** Limits that are fractions in (0, 1] rather than positive integers. */
const FRACTION_LIMITS: ReadonlySet<string> = new Set(["compactDeadFractionMin"]);
/** Limits that may be 0 (no wait). */
const ZERO_OK_LIMITS: ReadonlySet<string> = new Set(["compactRetainMs", "segmentPrepareSyncBytesMax", "fsyncInlineMaxMs"]);

/** Limits whose default follows segmentBytesMax when they are not given: name → divisor. */
const SEGMENT_RELATIVE: ReadonlyArray<[keyof Limits, number]> = [
  ["compactSmallBytes", 8],
  ["compactRunBytesMax", 1],
  ["segmentPrepareAtBytes", 8],
];

export function resolveLimits(partial: Partial<Limits> = {}): Limits {
  const limits: Limits = { ...DEFAULT_LIMITS };
  for (const [name, value] of Object.entries(partial)) {
    if (value === undefined) continue;
    if (!(name in DEFAULT_LIMITS)) {
      throw new StrataError("INVALID_ARGUMENT", `unknown limit "${name}"; known limits: ${Object.keys(DEFAULT_LIMITS).join(", ")}`);
    }
    if (FRACTION_LIMITS.has(name)) {
      if (typeof value !== "number" || !(value > 0 && value <= 1)) throw new StrataError("INVALID_ARGUMENT", `limit ${name} must be a fraction in (0, 1], got ${String(value)}`);
    } else if (typeof value !== "number" || !Number.isSafeInteger(value) || value < (ZERO_OK_LIMITS.has(name) ? 0 : 1)) {
      throw new StrataError("INVALID_ARGUMENT", `limit ${name} must be a positive integer, got ${String(value)}`);
    }
    (limits as unknown as Record<string, number>)[name] = value;
  }
  for (const [name, divisor] of SEGMENT_RELATIVE) {
    if (partial[name] === undefined) limits[name] = Math.max(1, Math.floor(limits.segmentBytesMax / divisor));
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
    [l.segmentPrepareAtBytes <= l.segmentBytesMax, "segmentPrepareAtBytes must be <= segmentBytesMax"],
    [l.segmentPrepareDutyPercent <= 100, "segmentPrepareDutyPercent must be <= 100"],
    [l.commitBatchBytesMax >= l.recordBytesMax, "commitBatchBytesMax must be >= recordBytesMax"],
    [l.locationBytesMax <= 1024, "locationBytesMax must be <= 1024 (it is part of index keys)"],
    [l.keyBytesMax <= 1024, "keyBytesMax must be <= 1024 (it is part of index keys)"],
    [l.msgIdBytesMax <= 1024, "msgIdBytesMax must be <= 1024 (it is part of index keys)"],
    [l.scanPageSize <= 100_000, "scanPageSize must be <= 100000"],
    [l.blockCacheBytes >= l.blockBytes + l.recordBytesMax, "blockCacheBytes must hold at least one block (blockBytes + recordBytesMax)"],
    [l.objectAckTimeoutMs >= l.sealIntervalMs, "objectAckTimeoutMs must be >= sealIntervalMs"],
    [l.importRetryMs >= l.uploadRetryMaxMs, "importRetryMs must be >= uploadRetryMaxMs (an import retries at least one longest backoff)"],
    [l.epochLineageMax >= 2 && l.epochLineageMax <= 4096, "epochLineageMax must be in 2..4096 (the folded oldest entry and the newest at least; it is one index value)"],
    [l.compactDeadFractionMin > 0 && l.compactDeadFractionMin <= 1, "compactDeadFractionMin must be in (0, 1]"],
    [l.compactSmallBytes <= l.compactRunBytesMax, "compactSmallBytes must be <= compactRunBytesMax"],
    [l.compactRunBytesMax >= l.recordBytesMax * 2, "compactRunBytesMax must be >= 2 × recordBytesMax (an output holds whole records)"],
    [l.compactRunBytesMax <= 2 ** 31, "compactRunBytesMax must be <= 2 GiB"],
    [l.compactRateBytesPerSec >= l.recordBytesMax, "compactRateBytesPerSec must be >= recordBytesMax (a record per second at least)"],
    [l.compactSwitchChunkRecords <= 1_048_576, "compactSwitchChunkRecords must be <= 1048576 (one chunk is one index transaction, run alone)"],
    [l.configDedupWindowMsMax >= l.dedupWindowMs, "configDedupWindowMsMax must be >= dedupWindowMs (a stream may set the store's own window)"],
  ];
  const broken = rules.filter(([ok]) => !ok).map(([, why]) => why);
  if (broken.length > 0) {
    throw new StrataError("INVALID_ARGUMENT", `inconsistent limits: ${broken.join("; ")}`);
  }
}

// ─── The NATS wire layer: server side and client ─────────────────────────────────────────

export interface NetLimits {
  /** Bytes kept free in every message for the CBOR envelope around a chunk, part or batch. */
  frameOverheadBytes: number;
  /** Smallest max_payload of a NATS connection the wire protocol accepts. */
  maxPayloadMinBytes: number;
  /** Bytes of one upload the server lets a client send ahead of what it has consumed. */
  uploadWindowBytes: number;
  /** Bounds on the upload window, in chunks, whatever max_payload is. */
  uploadWindowChunksMin: number;
  uploadWindowChunksMax: number;
  /** An upload with no chunk and no progress for this long is abandoned; nothing becomes visible. */
  uploadIdleMs: number;
  /** Most uploads in progress on one server; more are refused with UNAVAILABLE. */
  uploadsMax: number;
  /**
   * Most uploads in progress of one client (the first token of its reply inbox, see
   * subjects.ts `replyClient`), so one client cannot hold every slot of `uploadsMax`.
   */
  uploadsPerClientMax: number;
  /**
   * Slowest average rate an upload may keep once its first `uploadIdleMs` are over: by then
   * `(elapsed - uploadIdleMs) × rate` bytes must have arrived, or the upload fails with TIMEOUT.
   * This bounds an upload's total time to `uploadIdleMs + bytes / rate` (at most 68 min for
   * 1 GiB at the default), however often a slow client sends a chunk to renew its idle timer.
   */
  uploadBytesPerSecMin: number;
  /** Largest request head (everything but the value) of a streamed single-value write. */
  uploadHeadBytesMax: number;
  /** Largest appendMany / setMany request once encoded (it is reassembled in memory). */
  batchBytesMax: number;
  /** Most request-head bytes all uploads of a server may buffer together. */
  uploadHeadBytesTotalMax: number;
  /** Messages of one streamed reply the server sends ahead of the client's credit. */
  replyWindowMessages: number;
  /** A streamed reply whose client grants no credit for this long is abandoned. */
  replyIdleMs: number;
  /** Most streamed replies in progress on one server; more are refused with UNAVAILABLE. */
  replyStreamsMax: number;
  /**
   * Bytes all replies of a server may hold at once (reply-budget.ts): replies being built (values
   * read for a get, batch results, the message a reply stream is filling and the item it carries
   * over) plus reply bytes published but not yet taken by nats-server. A reply that finds no room
   * within `replyBudgetWaitMs` is answered UNAVAILABLE; this is what keeps slow or hostile readers
   * from growing the server. Half of it at most is held by reply streams.
   */
  replyBytesInFlightMax: number;
  /** How long a reply waits for room in `replyBytesInFlightMax` before it is answered UNAVAILABLE. */
  replyBudgetWaitMs: number;
  /**
   * Published reply bytes below which the server's flush (a PING, to learn what nats-server has
   * taken) waits up to `replyFlushDelayMs` for more replies instead of following every reply
   * (net/server/outbound-meter.ts); at most `replyBytesInFlightMax / 64` is used. Until that
   * flush, those bytes count against the reply budget as not yet taken (an over-count).
   */
  replyFlushEagerBytesMax: number;
  /** Longest a lazy flush (see `replyFlushEagerBytesMax`) waits; less than `replyBudgetWaitMs`. */
  replyFlushDelayMs: number;
  /**
   * Bytes of values one `batch` reply may carry; a get whose value would go past it answers
   * TOO_LARGE with `alone: true`, and the client asks for it in a request of its own.
   */
  batchReplyBytesMax: number;
  /**
   * Bytes of read requests (`P.r…`) a server holds at once while they wait for room or run; more
   * are refused with UNAVAILABLE. (Writes are bounded by the upload and write-queue limits.)
   */
  readRequestBytesInFlightMax: number;
  /**
   * What a server may use in all (RSS), the target the other budgets are checked against at
   * startup: `serverBaseBytes + 2 × replyBytesInFlightMax` (nats.js copies outbound bytes once)
   * `+ 3 × readRequestBytesInFlightMax` (raw and decoded) must fit in it. Uploads are bounded apart.
   */
  serverMemoryBytesMax: number;
  /** What a server uses before any request (code, heap, caches, lmdb's touched pages), for the check above. */
  serverBaseBytes: number;
  /** Most requests a server handles at once; more are refused with UNAVAILABLE. */
  requestsInFlightMax: number;
  /** Most items in one getAll / keys batch message (each batch also fits in max_payload). */
  batchItemsMax: number;
  /**
   * Most bytes of items in one getAll / keys batch message (a larger item goes alone; a batch
   * also stays within max_payload less `frameOverheadBytes`; reply-stream.ts streamBatches). A
   * reader that falls behind holds up to `replyWindowMessages` of them (1 MiB by default), so
   * this times replyWindowMessages is what each streamed reply may cost a client (an HTTP
   * gateway: per listing). 512 KiB read a cold stream ~15 % faster but made that 4 MiB; a warm
   * server read back as fast at either size, within this machine's noise.
   */
  streamBatchBytesMax: number;
  /** Most changes in one `changes` reply, and the bytes of values they may carry together. */
  changesPageMax: number;
  changesReplyBytesMax: number;
  /**
   * Values of at most this many bytes travel inline in change-feed messages; a larger one goes out
   * without its bytes and with `omitted: true`, and a watcher reads it back with a `changes`
   * request (one per feed message it needs): the feed then carries no large value through
   * nats-server a second time when nobody watches (src/net/server/server-changes.ts).
   */
  changeInlineBytesMax: number;
  /** On stop, how long in-flight requests, uploads and streams may take to finish. */
  shutdownGraceMs: number;
  /** A request of a server to the coordinator (register, renew, claim, cut, confirm) fails after this. */
  coordRequestTimeoutMs: number;
  /**
   * At start, how long a server waits for an answer from another server running under its id
   * (src/net/wire/presence.ts); "no responders" comes at once, an answer refuses the start.
   */
  presenceProbeMs: number;
  /** Retry delays while the coordinator cannot be reached (src/backoff.ts). */
  coordRetryMinMs: number;
  coordRetryMaxMs: number;
  /** Most locations in one claim or confirm request of a server. */
  claimBatchMax: number;
  /**
   * A handover (strata move / drain) seals and ships within this, or keeps the locations; keep it
   * below the coordinator's handoverTimeoutMs (10 s), which gives up on a slower answer.
   */
  handoverShipMs: number;
  /**
   * After answering a handover, a claim that gets the same epoch back is refused for this long
   * (the coordinator is recording the move); after it, the same epoch means the move was not
   * recorded (the coordinator gave up) and the location is served again.
   */
  handoverHoldMs: number;
  /**
   * A `compact` operator request (`strata compact --server`) is answered within this: after it the
   * answer is TIMEOUT, the compaction itself goes on (it is crash-safe at every step, stopping it
   * half way gains nothing), and further compact requests are refused until it ends.
   */
  compactRequestMs: number;
}

export const DEFAULT_NET_LIMITS: Readonly<NetLimits> = Object.freeze({
  frameOverheadBytes: 1 * KiB,
  maxPayloadMinBytes: 8 * KiB,
  uploadWindowBytes: 4 * MiB,
  uploadWindowChunksMin: 2,
  uploadWindowChunksMax: 64,
  uploadIdleMs: 10_000,
  uploadsMax: 64,
  uploadsPerClientMax: 8,
  uploadBytesPerSecMin: 256 * KiB,
  uploadHeadBytesMax: 256 * KiB,
  batchBytesMax: 64 * MiB,
  uploadHeadBytesTotalMax: 256 * MiB,
  replyWindowMessages: 8,
  replyIdleMs: 30_000,
  replyStreamsMax: 1024,
  replyBytesInFlightMax: 128 * MiB,
  replyBudgetWaitMs: 2000,
  replyFlushEagerBytesMax: 64 * KiB,
  replyFlushDelayMs: 10,
  batchReplyBytesMax: 4 * MiB,
  readRequestBytesInFlightMax: 32 * MiB,
  serverMemoryBytesMax: 512 * MiB,
  serverBaseBytes: 128 * MiB,
  requestsInFlightMax: 10_000,
  batchItemsMax: 1000,
  streamBatchBytesMax: 128 * KiB,
  changesPageMax: 1000,
  changesReplyBytesMax: 4 * MiB,
  changeInlineBytesMax: 256,
  shutdownGraceMs: 10_000,
  coordRequestTimeoutMs: 2000,
  presenceProbeMs: 1000,
  coordRetryMinMs: 50,
  coordRetryMaxMs: 1000,
  claimBatchMax: 1000,
  handoverShipMs: 8000,
  handoverHoldMs: 30_000,
  compactRequestMs: 30 * 60_000,
});

// ─── The coordinator ───────────────────────────────────────────────────────────────────

export interface CoordinatorLimits {
  /**
   * Leases (docs/failover.md). A server is live while its lease holds: it renews every
   * `leaseRenewMs`; it believes in its lease until (renewal sent) + leaseMs − leaseMarginMs on its
   * own clock, the coordinator until (renewal received) + leaseMs + leaseMarginMs on its own, so
   * clock-rate skew below leaseMarginMs / leaseMs cannot give two holders. Rules checked:
   * leaseMarginMs × 2 <= leaseMs and leaseRenewMs × 2 <= leaseMs − leaseMarginMs (one lost renewal
   * never costs the lease). Given only leaseMs, renew and margin default to leaseMs / 5.
   */
  leaseMs: number;
  leaseRenewMs: number;
  leaseMarginMs: number;
  /** How long move/drain wait for the holder's `handover` reply before giving up (UNAVAILABLE). */
  handoverTimeoutMs: number;
  /** Most locations in one claim, confirm, release or handover request. */
  locationsPerRequestMax: number;
  /** Most moved locations a drain reply lists (it counts them all). */
  drainListMax: number;
  /** Most servers remembered; bounds memory and the size of the `servers` reply. */
  serversMax: number;
  /** Most new locations being recorded at once; beyond this locate answers UNAVAILABLE. */
  pendingAssignmentsMax: number;
  /**
   * New locations one client (first token of its reply inbox) may have assigned: a burst of
   * `assignBurstPerClientMax`, refilled at `assignPerClientPerSecMax`. Beyond it, locate of a new
   * location answers UNAVAILABLE (retryable); locating known locations is never limited.
   */
  assignBurstPerClientMax: number;
  assignPerClientPerSecMax: number;
  /** The same bucket for all clients together: what many clients (or forged inboxes) can add. */
  assignBurstMax: number;
  assignPerSecMax: number;
  /** Most clients whose buckets are remembered; the rest share one bucket. */
  assignClientsMax: number;
  /** Most durable assignments in total; beyond it, new locations are refused with TOO_LARGE. */
  assignmentsMax: number;
  /**
   * At start, how long a coordinator waits for an answer from another coordinator running on its
   * prefix (src/net/wire/presence.ts); "no responders" comes at once, an answer refuses the start.
   */
  presenceProbeMs: number;
}

export const DEFAULT_COORDINATOR_LIMITS: Readonly<CoordinatorLimits> = Object.freeze({
  leaseMs: 10_000,
  leaseRenewMs: 2000,
  leaseMarginMs: 2000,
  handoverTimeoutMs: 10_000,
  locationsPerRequestMax: 1000,
  drainListMax: 1000,
  serversMax: 1000,
  pendingAssignmentsMax: 10_000,
  assignBurstPerClientMax: 5000,
  assignPerClientPerSecMax: 500,
  assignBurstMax: 50_000,
  assignPerSecMax: 5000,
  assignClientsMax: 100_000,
  assignmentsMax: 50_000_000,
  presenceProbeMs: 1000,
});

export function resolveCoordinatorLimits(partial?: Partial<CoordinatorLimits>): CoordinatorLimits {
  // A lease given alone brings its renew interval and margin along (lease / 5 each).
  const lease = partial?.leaseMs;
  const derived = typeof lease === "number" && lease > 0 ? { leaseRenewMs: Math.max(1, Math.floor(lease / 5)), leaseMarginMs: Math.max(1, Math.floor(lease / 5)) } : {};
  const given = Object.fromEntries(Object.entries(partial ?? {}).filter(([, v]) => v !== undefined));
  const l = resolve(DEFAULT_COORDINATOR_LIMITS, { ...derived, ...given }, "coordinator");
  const rules: Array<[boolean, string]> = [
    [l.leaseMarginMs * 2 <= l.leaseMs, "leaseMarginMs × 2 must be <= leaseMs"],
    [l.leaseRenewMs * 2 <= l.leaseMs - l.leaseMarginMs, "leaseRenewMs × 2 must be <= leaseMs − leaseMarginMs (a server must be able to miss one renewal)"],
    [l.assignPerClientPerSecMax <= l.assignBurstPerClientMax, "assignPerClientPerSecMax must be <= assignBurstPerClientMax"],
    [l.assignPerSecMax <= l.assignBurstMax, "assignPerSecMax must be <= assignBurstMax"],
    [l.assignBurstPerClientMax <= l.assignBurstMax, "assignBurstPerClientMax must be <= assignBurstMax"],
  ];
  const broken = rules.filter(([ok]) => !ok).map(([, why]) => why);
  if (broken.length > 0) throw new StrataError("INVALID_ARGUMENT", `inconsistent coordinator limits: ${broken.join("; ")}`);
  return l;
}

export interface ClientLimits {
  /** Default budget of one call, retries included (the `timeoutMs` client option). */
  timeoutMs: number;
  /**
   * Longest wait for a reply message in one attempt of a call that is safe to repeat (reads,
   * appends with a msgId; also at most a third of `timeoutMs`), before it is sent again.
   */
  attemptTimeoutMs: number;
  /** Retry backoff: doubles from min to max, with full jitter. */
  retryBackoffMinMs: number;
  retryBackoffMaxMs: number;
  /** Largest reply the client reassembles from parts. */
  replyBytesMax: number;
  /** Most locations whose server the client remembers. */
  locateCacheMax: number;
  /** An idle watcher asks the server for missed changes this often (catches a lost last change). */
  watchResyncMs: number;
  /** Live changes a watcher buffers while it catches up; past this it drops them and refetches. */
  watchLiveBufferMax: number;
  /** Changes a watcher holds for a slow consumer before it stops reading ahead. */
  watchOutBufferMax: number;
  /** Changes asked for per `changes` request while catching up. */
  watchChangesPage: number;
  /**
   * Most small requests to one location sent together as one `batch` request when they are issued
   * in the same turn of the event loop (client-coalesce.ts); 1 sends every request on its own.
   */
  coalesceItemsMax: number;
  /**
   * Most bytes a kv read cache (`kv(loc).cache()`, kv-cache.ts) holds: keys, values, headers and
   * a per-entry overhead. Past it the cache drops everything and refuses with TOO_LARGE.
   */
  cacheBytesMax: number;
  /**
   * Longest a kv read cache serves without having heard from the location's server (a catch-up
   * reply or live changes applied); past it get() refuses with UNAVAILABLE until it is caught up.
   */
  cacheStaleMsMax: number;
  /**
   * While a request has waited this long for a reply message, the client checks that its server
   * is still there: a `ping` on the request's own subject, and "no responders" from nats-server
   * (nobody subscribes any more: the server was killed or lost its connection) ends the wait at
   * once, a read with UNAVAILABLE (asked again after re-locating), a write with TIMEOUT ("may or
   * may not be applied"). Any other outcome keeps waiting and checks again after as long
   * (server-probe.ts). 0 turns it off; a wait shorter than it (a small `timeoutMs`) is never checked.
   */
  serverProbeMs: number;
}

export const DEFAULT_CLIENT_LIMITS: Readonly<ClientLimits> = Object.freeze({
  timeoutMs: 10_000,
  attemptTimeoutMs: 2000,
  retryBackoffMinMs: 20,
  retryBackoffMaxMs: 1000,
  replyBytesMax: 1024 * MiB + 4 * MiB,
  locateCacheMax: 100_000,
  watchResyncMs: 5000,
  watchLiveBufferMax: 10_000,
  watchOutBufferMax: 1024,
  watchChangesPage: 500,
  coalesceItemsMax: 128,
  cacheBytesMax: 64 * MiB,
  cacheStaleMsMax: 10_000,
  serverProbeMs: 1000,
});

function resolve<T extends object>(defaults: Readonly<T>, partial: Partial<T> | undefined, what: string): T {
  const out = { ...defaults } as T;
  for (const [name, value] of Object.entries(partial ?? {})) {
    if (value === undefined) continue;
    if (!(name in defaults)) throw new StrataError("INVALID_ARGUMENT", `unknown ${what} limit "${name}"`);
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0) {
      throw new StrataError("INVALID_ARGUMENT", `${what} limit ${name} must be a positive integer, got ${String(value)}`);
    }
    (out as Record<string, number>)[name] = value;
  }
  return out;
}

export function resolveNetLimits(partial?: Partial<NetLimits>): NetLimits {
  const l = resolve(DEFAULT_NET_LIMITS, partial, "net");
  const rules: Array<[boolean, string]> = [
    [l.frameOverheadBytes * 4 <= l.maxPayloadMinBytes, "frameOverheadBytes must be at most a quarter of maxPayloadMinBytes"],
    [l.uploadWindowChunksMin >= 1 && l.uploadWindowChunksMin <= l.uploadWindowChunksMax, "uploadWindowChunksMin must be in 1..uploadWindowChunksMax"],
    [l.uploadHeadBytesMax <= l.batchBytesMax, "uploadHeadBytesMax must be <= batchBytesMax"],
    [l.batchBytesMax <= l.uploadHeadBytesTotalMax, "batchBytesMax must be <= uploadHeadBytesTotalMax"],
    [l.replyWindowMessages >= 1, "replyWindowMessages must be >= 1"],
    [l.replyFlushDelayMs < l.replyBudgetWaitMs, "replyFlushDelayMs must be < replyBudgetWaitMs"],
    [
      l.serverBaseBytes + 2 * l.replyBytesInFlightMax + 3 * l.readRequestBytesInFlightMax <= l.serverMemoryBytesMax,
      "serverBaseBytes + 2 × replyBytesInFlightMax + 3 × readRequestBytesInFlightMax must be <= serverMemoryBytesMax",
    ],
    [l.batchReplyBytesMax * 4 <= l.replyBytesInFlightMax, "batchReplyBytesMax must be at most a quarter of replyBytesInFlightMax"],
    [l.uploadsPerClientMax <= l.uploadsMax, "uploadsPerClientMax must be <= uploadsMax"],
    [l.coordRetryMinMs <= l.coordRetryMaxMs, "coordRetryMinMs must be <= coordRetryMaxMs"],
    [l.handoverShipMs < l.handoverHoldMs, "handoverShipMs must be < handoverHoldMs"],
    // A client can only send what the window grants: asking for more than one window per idle
    // period would fail honest uploads whenever the writer is merely slow.
    [l.uploadBytesPerSecMin * (l.uploadIdleMs / 1000) <= l.uploadWindowBytes, "uploadBytesPerSecMin × uploadIdleMs must be <= uploadWindowBytes"],
  ];
  const broken = rules.filter(([ok]) => !ok).map(([, why]) => why);
  if (broken.length > 0) throw new StrataError("INVALID_ARGUMENT", `inconsistent net limits: ${broken.join("; ")}`);
  return l;
}

/**
 * The relation a kv read cache needs between its staleness bound and the client's attempt wait:
 * a cache asks the server at least every cacheStaleMsMax / 2 (kv-cache.ts); one slow attempt on
 * top must still fit, or a healthy but slow server would make the cache flap to UNAVAILABLE.
 * Checked when a cache is made, so clients that never cache are not held to it.
 */
export function checkCacheLimits(l: ClientLimits): void {
  if (l.cacheStaleMsMax < 2 * Math.min(l.attemptTimeoutMs, Math.ceil(l.timeoutMs / 3))) {
    throw new StrataError("INVALID_ARGUMENT", `inconsistent limits for a kv cache: cacheStaleMsMax (${l.cacheStaleMsMax}) must be >= 2 × the attempt wait (min(attemptTimeoutMs, timeoutMs / 3) = ${Math.min(l.attemptTimeoutMs, Math.ceil(l.timeoutMs / 3))}); raise cacheStaleMsMax`);
  }
}

export function resolveClientLimits(partial?: Partial<ClientLimits>): ClientLimits {
  // serverProbeMs alone may be 0 (off); every other limit must be positive.
  const probeOff = partial?.serverProbeMs === 0;
  const l = resolve(DEFAULT_CLIENT_LIMITS, probeOff ? { ...partial, serverProbeMs: undefined } : partial, "client");
  if (probeOff) l.serverProbeMs = 0;
  if (l.retryBackoffMinMs > l.retryBackoffMaxMs) {
    throw new StrataError("INVALID_ARGUMENT", "inconsistent client limits: retryBackoffMinMs must be <= retryBackoffMaxMs");
  }
  if (l.coalesceItemsMax > DEFAULT_LIMITS.manyItemsMax) {
    // A server refuses larger batches (manyItemsMax); every call of such a batch would fail.
    throw new StrataError("INVALID_ARGUMENT", `client limit coalesceItemsMax must be <= ${DEFAULT_LIMITS.manyItemsMax} (a server's default manyItemsMax)`);
  }
  return l;
}

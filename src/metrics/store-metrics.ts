/**
 * The metrics of one `Store` (../store.ts): records written and read, by kind and op, with their
 * log bytes; the group commit (batch size, write+fdatasync latency, queue depth); locations and
 * dedup entries in the index; and, with a cold tier, uploads, the local cache and fault-ins.
 *
 * The store calls the hooks below from its commit and read paths (pre-bound children, no
 * allocation); everything the store or its tier already counts is read at scrape time through
 * `StoreSources`. Labels: `kind` (stream, kv, none) and `op` (a fixed set per record type), never
 * a location or key.
 */
import type { LogRecord } from "../log/record.js";
import { HotCounter, type HotCounterChild, type HotHistogramChild } from "./hot.js";
import { COUNT_BUCKETS, LATENCY_BUCKETS_SECONDS, counterFrom, gaugeFrom, histogram, type Metrics } from "./metrics.js";

/** What the metrics read from the store at scrape time. */
export interface StoreSources {
  queueDepth: () => number;
  locations: () => number;
  dedupEntries: () => number;
  fsyncs: () => number;
}

/** What they read from the store's tier at scrape time (absent without one). */
export interface TierSources {
  stats: () => { uploads: number; uploadedBytes: number; uploadedRawBytes: number; uploadFailures: number; evictions: number; checkpoints: number };
  cacheBytes: () => number;
  cacheLimitBytes: number;
}

type RecordType = LogRecord["t"];

/** The (kind, op) of each log record type. */
const WRITE_LABELS: Record<RecordType, [string, string]> = {
  sset: ["stream", "set"],
  sdel: ["stream", "delete"],
  sdelall: ["stream", "deleteAll"],
  kset: ["kv", "set"],
  kdel: ["kv", "delete"],
  chunk: ["none", "chunk"],
  import: ["none", "import"],
  config: ["none", "config"],
};

/** The reads the store counts (its read methods), and their labels. */
export type ReadOp = "stream_get" | "stream_scan" | "kv_get" | "changes";
const READ_LABELS: Record<ReadOp, [string, string]> = {
  stream_get: ["stream", "get"],
  stream_scan: ["stream", "scan"],
  kv_get: ["kv", "get"],
  changes: ["none", "changes"],
};

interface Pair {
  count: HotCounterChild;
  bytes: HotCounterChild;
}

export class StoreMetrics {
  private readonly writes = {} as Record<RecordType, Pair>;
  private readonly reads = {} as Record<ReadOp, Pair>;
  /** Write and fdatasync of one group-commit batch. */
  readonly fsyncSeconds: HotHistogramChild;
  /** Records per group-commit batch. */
  readonly batchRecords: HotHistogramChild;
  /** Tier hooks, bound by `tier()`. */
  uploadSeconds: HotHistogramChild | undefined;
  faultInSeconds: HotHistogramChild | undefined;
  cacheHits: HotCounterChild | undefined;
  cacheMisses: HotCounterChild | undefined;

  constructor(private readonly metrics: Metrics, sources: StoreSources) {
    const r = metrics.registry;
    const writes = new HotCounter(r, "strata_writes_total", "Records committed to the log, by kind and op", ["kind", "op"]);
    const writeBytes = new HotCounter(r, "strata_write_bytes_total", "Log bytes of the records committed, by kind and op", ["kind", "op"]);
    for (const [t, [kind, op]] of Object.entries(WRITE_LABELS) as Array<[RecordType, [string, string]]>) {
      this.writes[t] = { count: writes.child(kind, op), bytes: writeBytes.child(kind, op) };
    }
    const reads = new HotCounter(r, "strata_reads_total", "Records read by the store (get, scan, changes; the age sweep's scans too), by kind and op", ["kind", "op"]);
    const readBytes = new HotCounter(r, "strata_read_bytes_total", "Log bytes of the records read, by kind and op", ["kind", "op"]);
    for (const [key, [kind, op]] of Object.entries(READ_LABELS) as Array<[ReadOp, [string, string]]>) {
      this.reads[key] = { count: reads.child(kind, op), bytes: readBytes.child(kind, op) };
    }
    this.fsyncSeconds = histogram(r, "strata_commit_fsync_seconds", "Write and fdatasync of one group-commit batch (the ack latency floor of ack: local)", LATENCY_BUCKETS_SECONDS).child();
    this.batchRecords = histogram(r, "strata_commit_batch_records", "Records per group-commit batch (one fdatasync each)", COUNT_BUCKETS).child();
    gaugeFrom(r, "strata_write_queue_depth", "Writes queued for the group commit, not yet in a batch", sources.queueDepth);
    counterFrom(r, "strata_fsyncs_total", "fdatasync calls of the segment log", sources.fsyncs);
    gaugeFrom(r, "strata_locations", "Locations in the index", sources.locations);
    gaugeFrom(r, "strata_dedup_entries", "msgIds remembered in the dedup window", sources.dedupEntries);
  }

  /** A batch of committed records (called once per batch, before its writers are answered). */
  committed(records: ReadonlyArray<{ record: { t: RecordType }; ptr: { len: number } }>): void {
    for (const c of records) {
      const w = this.writes[c.record.t];
      w.count.inc();
      w.bytes.inc(c.ptr.len);
    }
  }

  /** `n` records of `bytes` log bytes read for `op`. */
  read(op: ReadOp, n: number, bytes: number): void {
    const p = this.reads[op];
    p.count.inc(n);
    p.bytes.inc(bytes);
  }

  /** Binds the tier's metrics (once, when the store has a tier). */
  tier(sources: TierSources): void {
    const r = this.metrics.registry;
    counterFrom(r, "strata_tier_uploads_total", "Sealed segments uploaded to the object store", () => sources.stats().uploads);
    counterFrom(r, "strata_tier_upload_bytes_total", "Bytes uploaded (sealed, compressed)", () => sources.stats().uploadedBytes);
    counterFrom(r, "strata_tier_upload_raw_bytes_total", "Log bytes of the segments uploaded (before compression)", () => sources.stats().uploadedRawBytes);
    counterFrom(r, "strata_tier_upload_failures_total", "Failed upload attempts (each is retried with backoff or quarantined)", () => sources.stats().uploadFailures);
    counterFrom(r, "strata_tier_evictions_total", "Local segment files evicted (they stay in the object store)", () => sources.stats().evictions);
    counterFrom(r, "strata_tier_checkpoints_total", "Index checkpoints uploaded", () => sources.stats().checkpoints);
    gaugeFrom(r, "strata_tier_cache_bytes", "Bytes of local segment files (active, waiting for upload, and cached uploaded ones)", sources.cacheBytes);
    gaugeFrom(r, "strata_tier_cache_limit_bytes", "The local byte budget (cacheBytes)", () => sources.cacheLimitBytes);
    this.uploadSeconds = histogram(r, "strata_tier_upload_seconds", "Seal and upload of one segment (successful attempts)", LATENCY_BUCKETS_SECONDS).child();
    this.faultInSeconds = histogram(r, "strata_tier_fault_in_seconds", "Read of one record from the object store (an evicted or foreign segment)", LATENCY_BUCKETS_SECONDS).child();
    this.cacheHits = new HotCounter(r, "strata_tier_cache_hits_total", "Record reads served from a local segment file").child();
    this.cacheMisses = new HotCounter(r, "strata_tier_cache_misses_total", "Record reads faulted in from the object store").child();
  }
}

/**
 * Scans behind the streamed read ops. Watchers need to know which revision produced each message
 * they replay (to merge the replay with the change feed without gap or duplicate), and the public
 * `StoredMessage` has no revision, so the stream scan reads the records itself, page by page of
 * the index and run by run of adjacent records, as `streamRecords` (stream-handle.ts) does for
 * `StreamHandle.getAll`. It yields each run as one array: a getAll of 50,000 messages then costs
 * some hundreds of async steps rather than 100,000 (one per record in each of two generators),
 * and each item comes with an upper bound of its encoded size, so that filling a batch never
 * walks the item again (reply-stream.ts streamBatches). Kv entries carry their revision already;
 * kv scans use the public API.
 */
import type { LargeRead, Store } from "../../store.js";
import type { KvEntry, StoredMessage } from "../../types.js";
import { validateKey, validateSeq } from "../../validate.js";
import { estimateBytes } from "../wire/wire-codec.js";

/** A stream message as it travels in getAll batches: the StoredMessage plus its revision. */
export type WireStreamItem = StoredMessage & { rev: number; large?: LargeRead };

/**
 * A stream item's encoded bytes besides its value and headers, at most: a map of four keys
 * (seq, value, timestamp, rev: 22 bytes with their headers), three integers of up to 9 bytes and
 * the value's and the map's headers (up to 5 and 1), with a margin.
 */
const ITEM_FIELDS_BYTES = 64;

/** A run of items read together, each with an upper bound of its encoded bytes. */
export interface ItemRun {
  run: unknown[];
  bytes: number[];
}

export function isItemRun(value: unknown): value is ItemRun {
  return value !== null && typeof value === "object" && Array.isArray((value as ItemRun).run);
}

/** Messages with seq >= startSeq in seq order, run by run, each with the revision of the write that produced it. */
export async function* scanStream(store: Store, location: string, startSeq: unknown): AsyncGenerator<ItemRun> {
  const from = startSeq === undefined ? 1 : validateSeq(startSeq, "startSeq");
  const meta = store.meta(location, "stream");
  if (!meta) return;
  const page = store.limits.scanPageSize;
  for (let next = from; ; ) {
    const entries = store.scanStream(meta.id, next, page);
    for (let at = 0; at < entries.length; ) {
      const { records, next: after } = await store.readStreamRun(location, entries, at);
      const run: WireStreamItem[] = new Array(records.length);
      const bytes: number[] = new Array(records.length);
      for (let i = 0; i < records.length; i++) {
        const rec = records[i]!;
        const item: WireStreamItem = { seq: rec.seq, value: rec.value, timestamp: rec.ts, rev: rec.rev };
        let size = rec.value.byteLength + ITEM_FIELDS_BYTES;
        if (rec.headers) {
          item.headers = rec.headers;
          size += estimateBytes(rec.headers);
        }
        // A large value is left unread: the reply streams it from disk (streamBatches).
        if (rec.chunks) item.large = store.largeRead(rec.chunks, rec.size);
        run[i] = item;
        bytes[i] = size;
      }
      yield { run, bytes };
      at = after;
    }
    if (entries.length < page) return;
    const last = entries[entries.length - 1]!.seq;
    // A seq past seqMax can only come from a log written before the bound was enforced.
    if (last >= Number.MAX_SAFE_INTEGER) return;
    next = last + 1;
  }
}

/** Live kv entries in key order, or just the one of `key` when given; large values left unread. */
export async function* scanKv(store: Store, location: string, key: unknown): AsyncGenerator<KvEntry & { large?: LargeRead }> {
  const kv = store.kv(location);
  if (key === undefined) {
    yield* kv.getAllLazy();
    return;
  }
  const entry = await kv.getLazy(validateKey(key, store.limits));
  if (entry) yield entry;
}

/**
 * Bytes of the record a `stream.get` / `kv.get` would read, looked up in the index before the read
 * (the reply budget reserves them first, server-reads.ts); 0 when there is none or the argument
 * is invalid (the get itself then answers that). A chunked value's record is only its small head:
 * such a value is streamed from disk under a reply stream's own reservation.
 */
export function getRecordBytes(store: Store, location: string, op: "stream.get" | "kv.get", arg: unknown): number {
  try {
    if (op === "stream.get") {
      const meta = store.meta(location, "stream");
      return meta ? (store.streamPointer(meta.id, validateSeq(arg))?.ptr.len ?? 0) : 0;
    }
    const meta = store.meta(location, "kv");
    return meta ? (store.kvEntry(meta.id, validateKey(arg, store.limits))?.ptr.len ?? 0) : 0;
  } catch {
    return 0;
  }
}

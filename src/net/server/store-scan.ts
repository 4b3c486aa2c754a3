/**
 * Scans behind the streamed read ops. Watchers need to know which revision produced each message
 * they replay (to merge the replay with the change feed without gap or duplicate), and the public
 * `StoredMessage` has no revision, so the stream scan reads the records itself, through the same
 * `streamRecords` as `StreamHandle.getAll`. (An engine-level `getAll({ withRevision })`
 * would let this file go.) Kv entries carry their revision already; kv scans use the public API.
 */
import type { LargeRead, Store } from "../../store.js";
import { streamRecords } from "../../stream-handle.js";
import type { KvEntry, StoredMessage } from "../../types.js";
import { validateKey, validateSeq } from "../../validate.js";

/** A stream message as it travels in getAll batches: the StoredMessage plus its revision. */
export type WireStreamItem = StoredMessage & { rev: number; large?: LargeRead };

/** Messages with seq >= startSeq in seq order, each with the revision of the write that produced it. */
export async function* scanStream(store: Store, location: string, startSeq: unknown): AsyncGenerator<WireStreamItem> {
  const next = startSeq === undefined ? 1 : validateSeq(startSeq, "startSeq");
  const meta = store.meta(location, "stream");
  if (!meta) return;
  for await (const rec of streamRecords(store, location, meta.id, next)) {
    const item: WireStreamItem = { seq: rec.seq, value: rec.value, timestamp: rec.ts, rev: rec.rev };
    if (rec.headers) item.headers = rec.headers;
    // A large value is left unread: the reply streams it from disk (streamBatches).
    if (rec.chunks) item.large = store.largeRead(rec.chunks, rec.size);
    yield item;
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

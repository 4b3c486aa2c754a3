/**
 * Scans behind the streamed read ops. Watchers need to know which revision produced each message
 * they replay (to merge the replay with the change feed without gap or duplicate), and the public
 * `StoredMessage` has no revision, so the stream scan reads the index and records itself, a page
 * at a time exactly as `StreamHandle.getAll` does. (An engine-level `getAll({ withRevision })`
 * would let this file go.) Kv entries carry their revision already; kv scans use the public API.
 */
import type { Store } from "../store.js";
import type { KvEntry, StoredMessage } from "../types.js";
import { validateKey, validateSeq } from "../validate.js";

/** A stream message as it travels in getAll batches: the StoredMessage plus its revision. */
export type WireStreamItem = StoredMessage & { rev: number };

/** Messages with seq >= startSeq in seq order, each with the revision of the write that produced it. */
export async function* scanStream(store: Store, location: string, startSeq: unknown): AsyncGenerator<WireStreamItem> {
  let next = startSeq === undefined ? 1 : validateSeq(startSeq, "startSeq");
  const meta = store.meta(location, "stream");
  if (!meta) return;
  const page = store.limits.scanPageSize;
  for (;;) {
    const entries = [...store.index.seqs.getRange({ start: [meta.id, next], end: [meta.id, Number.MAX_SAFE_INTEGER], limit: page })];
    for (const { key, value } of entries) {
      const seq = key[1] as number;
      const ptr = { seg: value[0], off: value[1], len: value[2] };
      const rec = await store.readRecord(ptr);
      if (rec.t !== "sset" || rec.loc !== location || rec.seq !== seq) {
        // Let the engine's own check produce its CORRUPT error with the operator hint.
        await store.readMessage(location, seq, ptr);
      }
      if (rec.t === "sset") {
        const item: WireStreamItem = { seq, value: await store.valueOf(rec), timestamp: rec.ts, rev: rec.rev };
        if (rec.headers) item.headers = rec.headers;
        yield item;
      }
      next = seq + 1;
    }
    if (entries.length < page) return;
  }
}

/** Live kv entries in key order, or just the one of `key` when given. */
export async function* scanKv(store: Store, location: string, key: unknown): AsyncGenerator<KvEntry> {
  const kv = store.kv(location);
  if (key === undefined) {
    yield* kv.getAll();
    return;
  }
  const entry = await kv.get(validateKey(key, store.limits));
  if (entry) yield entry;
}

/**
 * Typed reads of the LMDB index for the engine's read path (handles, watch gap fill, TTL sweep,
 * `ack: "object"` of a repeated msgId). This is the one place outside the writers (./apply.ts,
 * ../write-ops.ts) that knows what each position of an index tuple means: callers get named
 * fields (`{ ptr, size, rev, expiresAt }`), never `e[0]`…`e[5]`; the write path's decisions
 * (../write-ops.ts) read kv and msgId entries through it too. Also the sweeper's pruning of msgIds
 * past the dedup window, which removes `dedup`/`dedupAge` entries.
 *
 * Invariants: every read runs outside a write transaction and sees the last committed one; scans
 * are bounded by the `limit` their caller passes (one page), never by the size of a location.
 */
import type { Pointer } from "../log/record.js";
import { locationEnd } from "./codecs.js";
import { dedupWindowOf } from "./location-conf.js";
import type { KvIndexEntry, LmdbIndex, RevEntry, SeqEntry } from "./lmdb-index.js";

/** Where a stream message's record is, and how many value bytes it holds. */
export interface StreamPointer {
  seq: number;
  ptr: Pointer;
  size: number;
}

/** A kv key's current entry: where its record is, its value size, revision and expiry (0 = none). */
export interface KvPointer {
  key: string;
  ptr: Pointer;
  size: number;
  rev: number;
  expiresAt: number;
}

/** The record that produced a revision; `removed` is set by a deleteAll (how many it removed). */
export interface RevPointer {
  rev: number;
  ptr: Pointer;
  removed: number;
}

/** A msgId's stored append: its seq, revision and timestamp, and `at`, the commit time the dedup window counts from. */
export interface MsgIdHit {
  seq: number;
  rev: number;
  ts: number;
  at: number;
}

/** A kv entry whose TTL has passed and which the sweeper has not yet turned into an expiry record. */
export interface DueTtl {
  expiresAt: number;
  locId: number;
  key: string;
  rev: number;
}

const pointerOf = (e: SeqEntry | KvIndexEntry | RevEntry): Pointer => ({ seg: e[0], off: e[1], len: e[2] });

const streamOf = (seq: number, e: SeqEntry): StreamPointer => ({ seq, ptr: pointerOf(e), size: e[3] });

const kvOf = (key: string, e: KvIndexEntry): KvPointer => ({ key, ptr: pointerOf(e), size: e[3], rev: e[4], expiresAt: e[5] });

/** A kv entry is live while it has no expiry or its expiry is still ahead of `now`. */
export const kvLive = (e: KvPointer, now: number): boolean => e.expiresAt === 0 || e.expiresAt > now;

export function streamPointer(index: LmdbIndex, locId: number, seq: number): StreamPointer | undefined {
  const e = index.seqs.get([locId, seq]);
  return e ? streamOf(seq, e) : undefined;
}

/** Up to `limit` index entries of a stream with seq >= `fromSeq`, in seq order: one page of a scan. */
export function scanStream(index: LmdbIndex, locId: number, fromSeq: number, limit: number): StreamPointer[] {
  const out: StreamPointer[] = [];
  for (const { key, value } of index.seqs.getRange({ start: [locId, fromSeq], end: locationEnd(locId), limit })) {
    out.push(streamOf(key[1] as number, value));
  }
  return out;
}

/** The lowest seq a stream still holds, if any. */
export function firstSeq(index: LmdbIndex, locId: number): number | undefined {
  for (const key of index.seqs.getKeys({ start: [locId, 0], end: locationEnd(locId), limit: 1 })) return key[1] as number;
  return undefined;
}

/** A kv key's index entry, expired or not (the sweeper may not have written its expiry yet). */
export function kvEntry(index: LmdbIndex, locId: number, key: string): KvPointer | undefined {
  const e = index.kvs.get([locId, key]);
  return e ? kvOf(key, e) : undefined;
}

/** A kv key's entry when it is live at `now`: an entry whose TTL has passed is invisible at once. */
export function liveKv(index: LmdbIndex, locId: number, key: string, now: number): KvPointer | undefined {
  const e = kvEntry(index, locId, key);
  return e && kvLive(e, now) ? e : undefined;
}

/**
 * One page of a kv location's entries in key order, with key > `afterKey` (from the first key when
 * undefined), expired ones included (filter with `kvLive`): a page shorter than `limit` is the
 * last one.
 */
export function scanKv(index: LmdbIndex, locId: number, afterKey: string | undefined, limit: number): KvPointer[] {
  const start: [number, string] = [locId, afterKey === undefined ? "" : afterKey + "\0"];
  const out: KvPointer[] = [];
  for (const { key, value } of index.kvs.getRange({ start, end: [locId + 1, ""], limit })) out.push(kvOf(key[1] as string, value));
  return out;
}

/** Up to `limit` revisions of a location above `afterRev`, oldest first. */
export function scanRevs(index: LmdbIndex, locId: number, afterRev: number, limit: number): RevPointer[] {
  const out: RevPointer[] = [];
  for (const { key, value } of index.revs.getRange({ start: [locId, afterRev + 1], end: locationEnd(locId), limit })) {
    out.push({ rev: key[1] as number, ptr: pointerOf(value), removed: value[3] ?? 0 });
  }
  return out;
}

/** The newest `limit` revisions of a location, newest first. */
export function scanRevsNewest(index: LmdbIndex, locId: number, limit: number): RevPointer[] {
  const out: RevPointer[] = [];
  for (const { key, value } of index.revs.getRange({ start: locationEnd(locId), end: [locId, 0], reverse: true, limit })) {
    out.push({ rev: key[1] as number, ptr: pointerOf(value), removed: value[3] ?? 0 });
  }
  return out;
}

/** Up to `limit` kv entries whose expiry is at or before `now`, earliest first. */
export function dueTtl(index: LmdbIndex, now: number, limit: number): DueTtl[] {
  const out: DueTtl[] = [];
  for (const { key, value } of index.ttl.getRange({ start: [0, 0, ""], end: [now + 1, 0, ""], limit })) {
    out.push({ expiresAt: key[0], locId: key[1], key: key[2], rev: value });
  }
  return out;
}

/** The stored append of a stream's msgId, whether or not it is still inside the dedup window. */
export function msgIdHit(index: LmdbIndex, locId: number, msgId: string): MsgIdHit | undefined {
  const e = index.dedup.get([locId, msgId]);
  return e ? { seq: e[0], rev: e[1], ts: e[2], at: e[3] } : undefined;
}

/** The path of a location id, undefined for an id no location has (any more). */
export function locationName(index: LmdbIndex, locId: number): string | undefined {
  return index.locIds.get(locId);
}

/**
 * Forgets up to `limit` msgIds outside their stream's dedup window (the store's `storeWindowMs`, or
 * the stream's own `dedupWindowMs`, ./location-conf.ts). `dedupAge` keys are looked at once their
 * time is `storeWindowMs` old; a msgId of a stream with a longer window is then re-keyed to when
 * its own window ends (its `dedup` entry keeps the commit time), so it neither blocks the scan nor
 * is forgotten early. A msgId repeated since has a newer commit time in `dedup`, and keeps its entry.
 */
export function pruneDedup(index: LmdbIndex, now: number, storeWindowMs: number, limit: number): void {
  const old = [...index.dedupAge.getKeys({ start: [0, 0, ""], end: [now - storeWindowMs, 0, ""], limit })];
  if (old.length === 0) return;
  index.write(() => {
    for (const key of old) {
      const [, locId, msgId] = key;
      index.dedupAge.remove(key);
      const hit = msgIdHit(index, locId, msgId);
      if (!hit) continue;
      const window = dedupWindowOf(index, locId, storeWindowMs);
      if (now - hit.at > window) index.dedup.remove([locId, msgId]);
      else index.dedupAge.put([hit.at + window - storeWindowMs, locId, msgId], null);
    }
  });
}

/**
 * The engine's record reads: from an index pointer to a verified log record, a stream message, a
 * kv entry or a (possibly chunked) value. A record comes from its local segment file when it is on
 * disk (synchronously), else a block at a time from the object store through the tier. `Store`
 * owns one `RecordReader` and delegates its `read*`/`valueOf`/`largeRead` methods to it.
 *
 * Invariants: every read is verified twice before a byte of it is returned: the frame's checksum
 * and exact length (SegmentLog.readBody / Tier.readBody, then `decodeRecord` checks every field;
 * a scan reads its common record in place with log/record-fast.ts, which accepts only what
 * decodeRecord would read the same),
 * and that the record is the one asked for (kind, location, seq or key; a chunked value's chunks
 * add up to exactly its size), else CORRUPT naming the index entry (fixed by `strata reindex`).
 * A chunked value is read one chunk record at a time, so `valuePieces` holds one chunk in memory.
 * A record read from a foreign segment (another server's log, ./index/foreign-logs.ts) lists its
 * chunks relative to that log; `readRecord` rebases them into the same foreign log before anything
 * follows them, so every pointer a caller sees is in this index's segment-id space.
 *
 * Compaction (docs/compaction.md) moves records to an output segment and, after `compactRetainMs`,
 * deletes the old one. A reader that took a pointer before and reads it after (a paused `getAll`)
 * finds the segment gone: every read here then looks its entry up again by identity (a message by
 * location and seq, a kv entry by location and key, a change by location and revision, through
 * the `EntryLookups` it was given) and, when the entry now points elsewhere, retries once there.
 * A failure with the entry still pointing at the same place is reported as it was.
 */
import { StrataError } from "./errors.js";
import { FOREIGN_SEG_SPAN, foreignSeg, isForeign, logOf } from "./index/foreign-logs.js";
import type { LargeRead } from "./engine.js";
import type { Limits } from "./limits.js";
import { decodeRecord, type LogRecord, type Pointer, type StreamSetRecord } from "./log/record.js";
import { adjacentRun, type SegmentLog } from "./log/segment-log.js";
import { decodeStreamSetFast, locationBytes } from "./log/record-fast.js";
import type { Tier } from "./tier/tier.js";
import type { KvEntry, StoredMessage } from "./types.js";

/** Where an index entry points now, by its identity (undefined: the entry is gone). */
export interface EntryLookups {
  message(location: string, seq: number): Pointer | undefined;
  kvEntry(location: string, key: string): Pointer | undefined;
  revision(location: string, rev: number): Pointer | undefined;
}

/** The identity of a set record, to find it again when its chunks moved. */
type SetIdentity = { t?: string; loc?: string; seq?: number; key?: string };

export class RecordReader {
  /** `tier` is asked on each read: the store attaches its tier after opening the log. */
  constructor(
    private readonly log: SegmentLog,
    private readonly limits: Limits,
    private readonly tier: () => Tier | undefined,
    private readonly lookups: EntryLookups,
  ) {}

  /**
   * Runs `read(ptr)`; when it fails and the entry (found again by `lookup`) points elsewhere now
   * (a compaction moved it), runs it once more there.
   */
  private async again<T>(ptr: Pointer, lookup: () => Pointer | undefined, read: (p: Pointer) => Promise<T>): Promise<T> {
    try {
      return await read(ptr);
    } catch (err) {
      const now = lookup();
      if (now === undefined || (now.seg === ptr.seg && now.off === ptr.off)) throw err;
      return read(now);
    }
  }

  /** The record that produced revision `rev` of `location` (changesSince), found again if it moved. */
  readRevision(location: string, rev: number, ptr: Pointer): Promise<LogRecord> {
    return this.again(ptr, () => this.lookups.revision(location, rev), (p) => this.readRecord(p));
  }

  /** The chunks of set record `rec` as its entry lists them now (a compaction may have moved them). */
  private async chunksNow(rec: SetIdentity): Promise<Pointer[] | undefined> {
    let ptr: Pointer | undefined;
    if (rec.t === "sset" && rec.loc !== undefined && rec.seq !== undefined) ptr = this.lookups.message(rec.loc, rec.seq);
    else if (rec.t === "kset" && rec.loc !== undefined && rec.key !== undefined) ptr = this.lookups.kvEntry(rec.loc, rec.key);
    if (ptr === undefined) return undefined;
    const now = await this.readRecord(ptr);
    return (now.t === "sset" || now.t === "kset") && now.loc === rec.loc ? now.chunks : undefined;
  }

  /** Reads and verifies the record at `ptr`: from the local segment file when on disk, else through the tier. */
  async readRecord(ptr: Pointer): Promise<LogRecord> {
    const tier = this.tier();
    if (isForeign(ptr.seg)) {
      if (!tier) throw new StrataError("UNAVAILABLE", `segment ${ptr.seg} is another server's (an imported location) and this store has no object store; open it with its tier`);
      return rebased(decodeRecord(await tier.readBody(ptr)), ptr);
    }
    if (tier && !tier.isLocal(ptr.seg)) return decodeRecord(await tier.readBody(ptr));
    tier?.touch(ptr.seg);
    return decodeRecord(this.log.readBody(ptr));
  }

  /** Assembles a value: inline, or the concatenation of its chunk records. */
  async valueOf(rec: { value: Uint8Array; chunks?: Pointer[]; size: number } & SetIdentity): Promise<Uint8Array> {
    if (!rec.chunks) return rec.value;
    const out = Buffer.allocUnsafe(rec.size);
    let at = 0;
    for await (const piece of this.valuePieces({ chunks: rec.chunks, size: rec.size }, () => this.chunksNow(rec))) {
      out.set(piece, at);
      at += piece.byteLength;
    }
    return out;
  }

  /**
   * The pieces of a chunked value, one chunk record at a time (memory bounded by one chunk,
   * whatever the value's size), checked to add up to exactly its size.
   */
  async *valuePieces(rec: { chunks: Pointer[]; size: number }, moved?: () => Promise<Pointer[] | undefined>): AsyncGenerator<Uint8Array> {
    let at = 0;
    let chunks = rec.chunks;
    let refreshed = false;
    for (let i = 0; i < chunks.length; i++) {
      const ptr = chunks[i]!;
      let chunk: LogRecord;
      try {
        chunk = await this.readRecord(ptr);
      } catch (err) {
        // Compaction copies chunks frame for frame, so the value's pieces are the same ones.
        const now = refreshed || !moved ? undefined : await moved().catch(() => undefined);
        refreshed = true;
        if (now === undefined || now.length !== chunks.length || (now[i]!.seg === ptr.seg && now[i]!.off === ptr.off)) throw err;
        chunks = now;
        chunk = await this.readRecord(chunks[i]!);
      }
      if (chunk.t !== "chunk" || at + chunk.data.byteLength > rec.size) throw corruptPointer(ptr, "a chunk of a large value");
      at += chunk.data.byteLength;
      yield chunk.data;
    }
    if (at !== rec.size) throw corruptPointer(rec.chunks[0]!, `a large value (${at} of ${rec.size} bytes)`);
  }

  /** A chunked value left unread: its size, and its pieces when asked for (`rec`: whose value it is, to find it again). */
  largeRead(chunks: Pointer[], size: number, rec?: SetIdentity): LargeRead {
    return { size, pieces: () => this.valuePieces({ chunks, size }, rec ? () => this.chunksNow(rec) : undefined) };
  }

  /**
   * Reads the stream message an index entry points to, checking it is the one asked for.
   * With `lazy`, a chunked value is not read: the message has an empty value and `large` reads it.
   */
  async readMessage(location: string, seq: number, ptr: Pointer, lazy = false): Promise<StoredMessage & { large?: LargeRead }> {
    const rec = await this.again(ptr, () => this.lookups.message(location, seq), async (p) => streamRecord(await this.readRecord(p), location, seq, p));
    const msg: StoredMessage & { large?: LargeRead } = { seq, value: rec.chunks && !lazy ? await this.valueOf(rec) : rec.value, timestamp: rec.ts };
    if (rec.headers) msg.headers = rec.headers;
    if (rec.chunks && lazy) msg.large = this.largeRead(rec.chunks, rec.size, rec);
    return msg;
  }

  /**
   * Reads the stream records of `entries` (a page of a scan) from `start` on, checking each is the
   * one asked for: records that lie back to back in a local segment, up to `scanReadBytesMax`,
   * with one read; else (an evicted segment) one record through the tier.
   * Resolves to the records read and the index of the next entry to read.
   */
  async readStreamRun(location: string, entries: ReadonlyArray<{ seq: number; ptr: Pointer }>, start: number): Promise<{ records: StreamSetRecord[]; next: number }> {
    const first = entries[start]!;
    const tier = this.tier();
    const one = async () => ({
      records: [await this.again(first.ptr, () => this.lookups.message(location, first.seq), async (p) => streamRecord(await this.readRecord(p), location, first.seq, p))],
      next: start + 1,
    });
    if (isForeign(first.ptr.seg) || (tier && !tier.isLocal(first.ptr.seg))) return one();
    tier?.touch(first.ptr.seg);
    const n = adjacentRun(entries, start, this.limits.scanReadBytesMax);
    let bodies: Buffer[];
    try {
      bodies = this.log.readBodies(first.ptr.seg, entries.slice(start, start + n).map((e) => e.ptr));
    } catch {
      // The segment may be gone (compacted and reclaimed): one entry at a time, each found again.
      return one();
    }
    // The values share the run's buffer (at most scanReadBytesMax), as values faulted in from the
    // tier share their block.
    // The common record (inline value, no options) is read in place; any other goes through
    // decodeRecord, which checks every field (record-fast.ts returns nothing it would reject).
    const locBytes = locationBytes(location);
    const records = bodies.map((body, i) => {
      const { seq, ptr } = entries[start + i]!;
      const fast = locBytes === undefined ? undefined : decodeStreamSetFast(body, location, locBytes);
      return fast !== undefined && fast.seq === seq ? fast : streamRecord(decodeRecord(body), location, seq, ptr);
    });
    return { records, next: start + n };
  }

  /** Reads the kv entry an index entry points to, checking it is the one asked for (`lazy`: as readMessage). */
  async readKvEntry(location: string, key: string, ptr: Pointer, lazy = false): Promise<KvEntry & { large?: LargeRead }> {
    const rec = await this.again(ptr, () => this.lookups.kvEntry(location, key), async (p) => {
      const r = await this.readRecord(p);
      if (r.t !== "kset" || r.loc !== location || r.key !== key) throw corruptPointer(p, `${location} key ${key}`);
      return r;
    });
    const entry: KvEntry & { large?: LargeRead } = { key, value: rec.chunks && lazy ? rec.value : await this.valueOf(rec), revision: rec.rev, timestamp: rec.ts };
    if (rec.headers) entry.headers = rec.headers;
    if (rec.expiresAt !== undefined) entry.expiresAt = rec.expiresAt;
    if (rec.chunks && lazy) entry.large = this.largeRead(rec.chunks, rec.size, rec);
    return entry;
  }
}

/**
 * A record read from foreign segment `ptr.seg`, with its chunk pointers (relative to the log that
 * wrote it, whose segments are all below 2^32) moved into the same foreign log.
 */
function rebased(rec: LogRecord, ptr: Pointer): LogRecord {
  if ((rec.t !== "sset" && rec.t !== "kset") || rec.chunks === undefined) return rec;
  const f = logOf(ptr.seg);
  for (const c of rec.chunks) if (c.seg >= FOREIGN_SEG_SPAN) throw corruptPointer(ptr, "a chunked value whose chunks are not in its own log");
  rec.chunks = rec.chunks.map((c) => ({ seg: foreignSeg(f, c.seg), off: c.off, len: c.len }));
  return rec;
}

/** `rec` as the stream set record of `location` at `seq`, or CORRUPT when the index pointed elsewhere. */
function streamRecord(rec: LogRecord, location: string, seq: number, ptr: Pointer): StreamSetRecord {
  if (rec.t !== "sset" || rec.loc !== location || rec.seq !== seq) throw corruptPointer(ptr, `${location} seq ${seq}`);
  return rec;
}

function corruptPointer(ptr: Pointer, what: string): StrataError {
  return new StrataError("CORRUPT", `the index entry for ${what} points at segment ${ptr.seg} offset ${ptr.off}, which holds something else; run \`strata reindex\``);
}

/**
 * Which changes a watch (./watch.ts) shows, decided change by change, with no I/O: its filter,
 * the merge of the replay with the changes that follow it, and the checks that turn what the
 * wire brings (replay items, change-feed entries) into `Change`s.
 *
 * Invariants:
 * - Merging the replay: a change is skipped when the replay already showed the same or a newer
 *   write of that seq / key (remembered revision >= change revision; for deletes, >). A stream
 *   `deleteAll` is never skipped, and the writes the replay showed after it are forgotten, so
 *   they are delivered again after it.
 * - Past the newest write the replay showed, nothing can be a repeat of it any more: the memory
 *   is dropped (`passed`), so it is bounded by what the replay showed.
 * - Across a move, only what the replay showed up to the new owner's `since` is remembered
 *   (`forgetAfter`): past it, the old owner's writes may be lost and the new owner's are new.
 * - Nothing from the wire is trusted: a malformed replay item is CORRUPT; a change-feed entry
 *   that is not a change (`isChange`) is passed over.
 */
import { StrataError } from "../../errors.js";
import type { Change, KvEntry, StoredMessage } from "../../types.js";
import { isPlainMap } from "../wire/wire-codec.js";

export type WatchFilter = { kind: "stream"; startSeq: number } | { kind: "kv"; key?: string };

/** The filter, and what the replay showed of writes newer than its base (see the invariants). */
export class ReplayMerge {
  private readonly seen = new Map<number | string, number>();
  private seenMax = 0;

  constructor(private readonly filter: WatchFilter) {}

  /** The replay showed the write of `id` at `revision` (newer than its base). */
  remember(id: number | string, revision: number): void {
    this.seen.set(id, Math.max(this.seen.get(id) ?? 0, revision));
    if (revision > this.seenMax) this.seenMax = revision;
  }

  /** Every change up to `cursor` has been handled: drop the memory once past all of it. */
  passed(cursor: number): void {
    if (cursor >= this.seenMax) this.seen.clear();
  }

  /** A new owner's history replaces what was shown: nothing is a repeat any more. */
  forget(): void {
    this.seen.clear();
    this.seenMax = 0;
  }

  /**
   * A new owner's history is the shown one only up to `since`: writes the replay showed past it
   * may not have survived the move, so the new owner's changes of those revisions are no repeats.
   */
  forgetAfter(since: number): void {
    if (this.seenMax <= since) return;
    this.seenMax = 0;
    for (const [id, rev] of this.seen) {
      if (rev > since) this.seen.delete(id);
      else if (rev > this.seenMax) this.seenMax = rev;
    }
  }

  /** Whether `c`, a set, would be emitted (not filtered out, not shown by the replay already). */
  shows(c: Change): boolean {
    return this.matches(c) && !this.alreadyReplayed(c);
  }

  matches(c: Change): boolean {
    const f = this.filter;
    if (f.kind !== c.kind) return false;
    if (f.kind === "kv") return f.key === undefined || (c as { key: string }).key === f.key;
    if (c.kind === "stream" && c.op === "deleteAll") return c.endSeq >= f.startSeq;
    return (c as { seq: number }).seq >= f.startSeq;
  }

  alreadyReplayed(c: Change): boolean {
    if (this.seen.size === 0) return false;
    if (c.kind === "stream" && c.op === "deleteAll") {
      // Writes the replay showed that came after this deleteAll must be delivered again after it.
      for (const [seq, rev] of this.seen) if (typeof seq === "number" && seq <= c.endSeq && rev > c.revision) this.seen.delete(seq);
      return false;
    }
    const rev = this.seen.get(idOf(c));
    if (rev === undefined) return false;
    return c.op === "set" ? rev >= c.revision : rev > c.revision;
  }
}

export function isChange(value: unknown): value is Change {
  return isPlainMap(value) && typeof value.revision === "number" && typeof value.op === "string" && typeof value.kind === "string";
}

/** A set whose value the feed left out (server-changes.ts); a fetched change never is one. */
export function isOmitted(c: Change): boolean {
  return (c as { omitted?: unknown }).omitted === true;
}

export function idOf(c: Change): number | string {
  return c.kind === "stream" ? (c as { seq: number }).seq : (c as { key: string }).key;
}

export function streamItemChange(location: string, raw: unknown): Change {
  if (!isPlainMap(raw) || typeof raw.seq !== "number" || typeof raw.rev !== "number") throw new StrataError("CORRUPT", "malformed stream item in a replay");
  const { rev, ...message } = raw as unknown as StoredMessage & { rev: number };
  return { location, kind: "stream", revision: rev, timestamp: message.timestamp, op: "set", seq: message.seq, message, size: message.value.byteLength, chunked: false };
}

export function kvItemChange(location: string, raw: unknown): Change {
  if (!isPlainMap(raw) || typeof raw.key !== "string" || typeof raw.revision !== "number") throw new StrataError("CORRUPT", "malformed kv entry in a replay");
  const entry = raw as unknown as KvEntry;
  return { location, kind: "kv", revision: entry.revision, timestamp: entry.timestamp, op: "set", key: entry.key, entry, size: entry.value.byteLength, chunked: false };
}

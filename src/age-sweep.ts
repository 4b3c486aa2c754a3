/**
 * The maxAgeMs part of the maintenance sweep (docs/compaction.md, "Per-location limits"): for each
 * stream with a `maxAgeMs` (found through the index's `confAge` table, never by scanning every
 * location), drops its messages in seq order while the oldest is older than the age, with the
 * same `sdelall` a `discard: "old"` limit writes (so watchers see a deleteAll).
 *
 * A message's age counts from its timestamp (the writer's, or the commit time when it gave none).
 * The drop stops at the first message that is young enough, even if a later seq is older (a
 * caller-given timestamp): the stream stays a suffix of itself, as with the other limits.
 *
 * Bounded work: at most `ageSweepLocationsMax` locations and `ageSweepMsgsMax` message reads per
 * sweep; a round-robin cursor carries the rest to the next sweep. The timestamps are read from
 * the log (the index has none), so the drop is submitted as an `sdrop` that the write path applies
 * only if the stream's entries up to there are still the ones read (./write-ops.ts): a write
 * meanwhile makes it a no-op, and the next sweep looks again.
 */
import type { Committed } from "./commit-queue.js";
import { locationName, scanStream } from "./index/index-reads.js";
import type { LmdbIndex } from "./index/lmdb-index.js";
import { agedLocations } from "./index/location-conf.js";
import type { Limits } from "./limits.js";
import { errorFields, type Logger } from "./logger.js";
import type { Pointer, StreamSetRecord } from "./log/record.js";
import type { WriteOp } from "./write-ops.js";

export interface AgeSweepable {
  readonly limits: Limits;
  now(): number;
  submit(op: WriteOp): Promise<{ result?: unknown; committed?: Committed }>;
  readStreamRun(location: string, entries: ReadonlyArray<{ seq: number; ptr: Pointer }>, start: number): Promise<{ records: StreamSetRecord[]; next: number }>;
  logger: Logger;
}

export class AgeSweep {
  /** The last location id looked at: the next sweep starts after it. */
  private cursor = 0;

  /** One sweep; resolves to the number of messages dropped. */
  async run(store: AgeSweepable, index: LmdbIndex): Promise<number> {
    const now = store.now();
    let budget = store.limits.ageSweepMsgsMax;
    let dropped = 0;
    for (const { id, maxAgeMs } of agedLocations(index, this.cursor, store.limits.ageSweepLocationsMax)) {
      if (budget <= 0) break;
      this.cursor = id;
      const loc = locationName(index, id);
      if (loc === undefined) continue;
      try {
        const found = await this.oldPrefix(store, index, id, loc, now - maxAgeMs, budget);
        budget -= found.read;
        // Out of budget inside this stream: it is looked at first next time.
        if (budget <= 0) this.cursor = id - 1;
        if (found.seen.length === 0) continue;
        const { committed } = await store.submit({ op: "sdrop", loc, endSeq: found.seen[found.seen.length - 1]![0], seen: found.seen });
        dropped += committed?.removed ?? 0;
      } catch (err) {
        // One stream that cannot be read (a damaged segment) must not stop the others.
        store.logger.warn({ event: "age_sweep_failed", location: loc, ...errorFields(err) }, `the maxAgeMs sweep of "${loc}" failed: ${(err as Error).message}`);
      }
    }
    return dropped;
  }

  /** The stream's first messages older than `cutoff`, in seq order, reading at most `budget`. */
  private async oldPrefix(store: AgeSweepable, index: LmdbIndex, id: number, loc: string, cutoff: number, budget: number): Promise<{ seen: Array<[number, number, number]>; read: number }> {
    const seen: Array<[number, number, number]> = [];
    let read = 0;
    const pageSize = store.limits.scanPageSize;
    for (let from = 0; read < budget; ) {
      const asked = Math.min(pageSize, budget - read);
      const page = scanStream(index, id, from, asked);
      for (let at = 0; at < page.length; ) {
        const run = await store.readStreamRun(loc, page, at);
        for (let i = 0; i < run.records.length; i++) {
          read += 1;
          const rec = run.records[i]!;
          if (rec.ts >= cutoff) return { seen, read };
          const ptr = page[at + i]!.ptr;
          seen.push([rec.seq, ptr.seg, ptr.off]);
        }
        at = run.next;
      }
      if (page.length < asked) return { seen, read };
      from = page[page.length - 1]!.seq + 1;
    }
    return { seen, read };
  }
}

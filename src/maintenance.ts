/**
 * Background upkeep of a store that is not part of any one request: turning expired kv entries
 * into expiry records, forgetting msgIds older than the dedup window, sealing a dirty active
 * segment every `sealIntervalMs` and uploading index checkpoints when a tier is configured, and
 * background compaction with its reclaim every `compactIntervalMs` (./compact.ts; one pass at a time).
 *
 * It depends on the few capabilities it is handed (`Sweepable`, `Upkeep`), not on `Store`'s
 * fields; index entries are read through ./index/index-reads.ts.
 */
import type { Committed } from "./commit-queue.js";
import { dueTtl, locationName, pruneDedup } from "./index/index-reads.js";
import type { LmdbIndex } from "./index/lmdb-index.js";
import type { Limits } from "./limits.js";
import { errorFields, type Logger } from "./logger.js";
import type { WriteOp } from "./write-ops.js";

/** What the TTL sweep needs: the clock, the limits and the group commit. */
export interface Sweepable {
  readonly limits: Limits;
  now(): number;
  submit(op: WriteOp): Promise<{ result?: unknown; committed?: Committed }>;
}

/** What the timers need; `checkpoint` only with a tier. */
export interface Upkeep {
  readonly limits: Limits;
  logger: Logger;
  sweep(): Promise<unknown>;
  sealActive(): Promise<void>;
  /** When the active segment got its first unsealed record (performance.now()), if it has one. */
  dirtySince(): number | undefined;
  /** Records committed so far: a checkpoint is due only when it changed. */
  records(): number;
  checkpoint?: () => Promise<unknown>;
  /** Background compaction and reclaim (../compact.ts `Compactor.background`); absent when turned off. */
  compact?: () => Promise<unknown>;
}

export async function sweepExpired(store: Sweepable, index: LmdbIndex): Promise<number> {
  const now = store.now();
  const due: WriteOp[] = [];
  for (const { locId, key, rev } of dueTtl(index, now, store.limits.ttlSweepBatchMax)) {
    const loc = locationName(index, locId);
    if (loc !== undefined) due.push({ op: "kexpire", loc, key, rev });
  }
  const results = await Promise.all(due.map((op) => store.submit(op)));
  pruneDedup(index, now, store.limits.dedupWindowMs, store.limits.ttlSweepBatchMax);
  return results.filter((r) => r.committed !== undefined).length;
}

/** Starts the store's timers; returns a function that stops them. */
export function startMaintenance(store: Upkeep): () => void {
  // One event per background task; `task` says which ("ttl_sweep", "seal", "checkpoint", "compaction").
  const warn = (task: string, what: string) => (err: unknown) => store.logger.warn({ event: "background_task_failed", task, ...errorFields(err) }, `${what} failed: ${(err as Error).message}`);
  const timers: NodeJS.Timeout[] = [];
  timers.push(setInterval(() => store.sweep().catch(warn("ttl_sweep", "TTL sweep")), store.limits.ttlSweepIntervalMs));
  const checkpoint = store.checkpoint;
  if (checkpoint) {
    const sealEveryMs = Math.max(10, Math.floor(store.limits.sealIntervalMs / 4));
    timers.push(
      setInterval(() => {
        const since = store.dirtySince();
        if (since !== undefined && performance.now() - since >= store.limits.sealIntervalMs) store.sealActive().catch(warn("seal", "sealing"));
      }, sealEveryMs),
    );
    // A checkpoint that failed (object store down) is tried again at the next interval, even
    // if nothing was written since.
    let checkpointed = store.records();
    timers.push(
      setInterval(() => {
        const records = store.records();
        if (records === checkpointed) return;
        checkpointed = records;
        checkpoint().catch((err: unknown) => {
          checkpointed = -1;
          warn("checkpoint", "index checkpoint")(err);
        });
      }, store.limits.checkpointIntervalMs),
    );
  }
  const compact = store.compact;
  if (compact) {
    // One pass at a time: a pass that outlasts the interval makes the next tick a no-op.
    let compacting = false;
    timers.push(
      setInterval(() => {
        if (compacting) return;
        compacting = true;
        compact()
          .catch(warn("compaction", "background compaction"))
          .finally(() => (compacting = false));
      }, store.limits.compactIntervalMs),
    );
  }
  for (const t of timers) t.unref();
  return () => timers.forEach((t) => clearInterval(t));
}

/**
 * Background upkeep of a store that is not part of any one request: turning expired kv entries
 * into expiry records, forgetting msgIds older than the dedup window, sealing a dirty active
 * segment every `sealIntervalMs` and uploading index checkpoints when a tier is configured.
 */
import type { Store } from "./store.js";
import type { WriteOp } from "./write-ops.js";

export async function sweepExpired(store: Store): Promise<number> {
  const now = store.config.clock();
  const due: WriteOp[] = [];
  for (const { key, value } of store.index.ttl.getRange({ start: [0, 0, ""], end: [now + 1, 0, ""], limit: store.limits.ttlSweepBatchMax })) {
    const [, locId, k] = key;
    const loc = store.index.locIds.get(locId);
    if (loc !== undefined) due.push({ op: "kexpire", loc, key: k, rev: value });
  }
  const results = await Promise.all(due.map((op) => store.submit(op)));
  pruneDedup(store, now);
  return results.filter((r) => r.committed !== undefined).length;
}

function pruneDedup(store: Store, now: number): void {
  const { index } = store;
  const cutoff = now - store.limits.dedupWindowMs;
  const old = [...index.dedupAge.getKeys({ start: [0, 0, ""], end: [cutoff, 0, ""], limit: store.limits.ttlSweepBatchMax })];
  if (old.length === 0) return;
  index.write(() => {
    for (const key of old) {
      const [ts, locId, msgId] = key;
      const hit = index.dedup.get([locId, msgId]);
      if (hit && hit[3] === ts) index.dedup.remove([locId, msgId]);
      index.dedupAge.remove(key);
    }
  });
}

/** Starts the store's timers; returns a function that stops them. */
export function startMaintenance(store: Store): () => void {
  const warn = (what: string) => (err: unknown) => store.config.onWarning(`${what} failed: ${(err as Error).message}`);
  const timers: NodeJS.Timeout[] = [];
  timers.push(setInterval(() => store.sweep().catch(warn("TTL sweep")), store.limits.ttlSweepIntervalMs));
  if (store.tier) {
    const sealEveryMs = Math.max(10, Math.floor(store.limits.sealIntervalMs / 4));
    timers.push(
      setInterval(() => {
        const since = store.log.dirtySince;
        if (since !== undefined && performance.now() - since >= store.limits.sealIntervalMs) store.sealActive().catch(warn("sealing"));
      }, sealEveryMs),
    );
    // A checkpoint that failed (object store down) is tried again at the next interval, even
    // if nothing was written since.
    let checkpointed = store.stats().records;
    timers.push(
      setInterval(() => {
        const records = store.stats().records;
        if (records === checkpointed || !store.tier) return;
        checkpointed = records;
        store.tier.checkpoint().catch((err: unknown) => {
          checkpointed = -1;
          warn("index checkpoint")(err);
        });
      }, store.limits.checkpointIntervalMs),
    );
  }
  for (const t of timers) t.unref();
  return () => timers.forEach((t) => clearInterval(t));
}

/**
 * The end of a failover run for watchers: wait until every watcher has delivered every surviving
 * change of the read-back state (the event the verdict needs), with a bound that grows with the
 * slowest takeover, and describe what a watcher missed when it did not.
 *
 * Why a scaled bound: a watcher catches up after a takeover only once the new owner serves
 * (recovery), then at its next resync; on a loaded machine a takeover took ~10 s, longer than a
 * fixed 15 s bound allowed for both. The wait ends as soon as nothing is missing, so the bound
 * costs time only when something really is missing (then the details say what, and when).
 */
import type { Analysis, KillEvent } from "../helpers/failover-verify.js";
import { analyse } from "../helpers/failover-verify.js";
import type { FailoverWorkload, StoredState } from "../helpers/failover-workload.js";

/** Room for watchers to catch up with no takeover to wait out. */
export const WATCH_CATCHUP_BASE_MS = 15_000;
/** Multiples of the slowest takeover (kill → first acknowledged write at the new owner) added to it. */
export const WATCH_CATCHUP_TAKEOVER_FACTOR = 3;

export interface WatchCatchUp {
  /** ms from the read-back to the moment nothing was missing (or to giving up). */
  ms: number;
  boundMs: number;
  caughtUp: boolean;
  /** The slowest takeover the bound was scaled by (ms; 0 without kills). */
  takeoverMs: number;
}

/** One missed change: what was stored, how it was acknowledged, and what its watcher showed. */
export interface MissedDetail {
  location: string;
  seq: number;
  msgId: string | undefined;
  /** The acknowledgement of the stored msgId: level, seq, ms relative to the first kill. */
  ack?: { ack: string; seq: number; ackedAfterKillMs: number };
  /** What the watcher delivered at that seq (revision, msgId, ms relative to the first kill). */
  deliveredAtSeq: Array<{ revision: number; msgId?: string; atAfterKillMs: number }>;
  /** The watcher's deliveries in all, and its last one. */
  deliveries: number;
  last?: { revision: number; seq?: number; atAfterKillMs: number };
}

export async function waitForWatchersCaughtUp(workload: FailoverWorkload, stored: Map<string, StoredState>, kills: KillEvent[]): Promise<WatchCatchUp> {
  const missing = () => analyse({ ...workload.records(), stored, kills }).watchers.missed.length;
  const takeoverMs = kills.length === 0 ? 0 : Math.max(0, ...analyse({ ...workload.records(), stored, kills }).recovery.map((r) => (Number.isFinite(r.max) ? r.max : 0)));
  const boundMs = WATCH_CATCHUP_BASE_MS + WATCH_CATCHUP_TAKEOVER_FACTOR * takeoverMs;
  const start = Date.now();
  for (;;) {
    if (missing() === 0) return { ms: Date.now() - start, boundMs, caughtUp: true, takeoverMs };
    if (Date.now() - start > boundMs) return { ms: Date.now() - start, boundMs, caughtUp: false, takeoverMs };
    // Polling a condition with a bound (watch deliveries have no event of their own here).
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

export function describeMissed(a: Analysis, workload: FailoverWorkload, stored: Map<string, StoredState>, kills: KillEvent[], max = 20): MissedDetail[] {
  const killAt = kills.length > 0 ? Math.min(...kills.map((k) => k.at)) : 0;
  const { acks, watched } = workload.records();
  return a.watchers.missed.slice(0, max).map(({ location, seq }) => {
    const s = stored.get(location);
    const msgId = s?.kind === "stream" ? s.bySeq.get(seq) : undefined;
    const ack = acks.find((r) => r.location === location && r.msgId === msgId);
    const seen = watched.get(location) ?? [];
    const last = seen[seen.length - 1];
    return {
      location,
      seq,
      msgId,
      ...(ack ? { ack: { ack: ack.ack, seq: ack.seq, ackedAfterKillMs: ack.ackedAt - killAt } } : {}),
      deliveredAtSeq: seen.filter((w) => w.seq === seq).map((w) => ({ revision: w.revision, msgId: w.msgId, atAfterKillMs: w.at - killAt })),
      deliveries: seen.length,
      ...(last ? { last: { revision: last.revision, seq: last.seq, atAfterKillMs: last.at - killAt } } : {}),
    };
  });
}

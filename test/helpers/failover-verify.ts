/**
 * The verifier of failover tests: pure functions from what a workload recorded (failover-workload.ts:
 * plan, acknowledgements, failures, watched changes) and what the locations hold at the end to
 * findings, and short summaries of them for the test log. Pure (no clients, no clock), so its
 * findings are themselves tested (test/failover/harness.test.ts).
 *
 * What it finds: acknowledged writes that are not stored as acknowledged (split by ack level),
 * msgIds stored at more than one seq, stored values the workload never sent, unreadable
 * locations, watchers that delivered out of order, twice, or not at all, and the recovery time
 * after each kill. It judges nothing: the tests decide which findings must be empty
 * (test/failover/run.ts `expectSafe`) and how many lost "local" acknowledgements they accept.
 */
import type { AckRecord, FailureRecord, PlannedLocation, StoredState, WatchRecord } from "./failover-workload.js";

export interface KillEvent {
  at: number;
  /** Locations the killed (or paused, or drained) server held. */
  locations: string[];
}

export interface AnalysisInput {
  plan: PlannedLocation[];
  acks: AckRecord[];
  failures: FailureRecord[];
  attempted: Map<string, Set<string>>;
  watched: Map<string, WatchRecord[]>;
  stored: Map<string, StoredState>;
  kills?: KillEvent[];
}

export interface WatcherFindings {
  watched: number;
  /** A change whose revision is not above the one before it, before any kill (a rewind is allowed only after one). */
  outOfOrder: Array<{ location: string; revision: number; after: number }>;
  /** The same (seq, msgId) delivered twice. */
  duplicates: Array<{ location: string; seq: number }>;
  /** A stored (surviving) message the watcher never delivered. */
  missed: Array<{ location: string; seq: number }>;
  /** Delivered changes that did not survive (a lost local ack); reported, not a failure by itself. */
  sawLost: Array<{ location: string; seq: number; msgId?: string }>;
  /** Times a watcher rewound after a kill to where the new owner's epoch began. */
  rewinds: number;
}

export interface Analysis {
  locations: number;
  acked: { object: number; local: number };
  /** Acknowledged at "object" and not (or not as acknowledged) in the final state: must be empty. */
  objectLost: AckRecord[];
  /** Acknowledged at "local" and not in the final state: counted, bounded by the tests. */
  localLost: AckRecord[];
  /** One msgId stored at more than one seq. */
  duplicates: Array<{ location: string; msgId: string; seqs: number[] }>;
  /** Stored values the workload never sent to that location. */
  foreign: Array<{ location: string; at: string; value: string }>;
  /** Planned locations with nothing readable. */
  unread: string[];
  failures: Record<string, number>;
  watchers: WatcherFindings;
  /** Per kill: ms from the kill to the first write acknowledged after it, over its locations. */
  recovery: Array<{ at: number; p50: number; p99: number; max: number; unrecovered: string[] }>;
}

export function analyse(input: AnalysisInput): Analysis {
  const objectLost: AckRecord[] = [];
  const localLost: AckRecord[] = [];
  for (const a of input.acks) {
    const s = input.stored.get(a.location);
    let present = false;
    if (s?.kind === "stream") present = s.bySeq.get(a.seq) === a.msgId;
    else if (s?.kind === "kv") present = s.byKey.get(a.key!) === a.msgId;
    if (!present) (a.ack === "object" ? objectLost : localLost).push(a);
  }
  const duplicates: Analysis["duplicates"] = [];
  const foreign: Analysis["foreign"] = [];
  for (const [location, s] of input.stored) {
    const attempted = input.attempted.get(location) ?? new Set<string>();
    if (s.kind === "stream") {
      const seqsOf = new Map<string, number[]>();
      for (const [seq, msgId] of s.bySeq) {
        seqsOf.set(msgId, [...(seqsOf.get(msgId) ?? []), seq]);
        if (!attempted.has(msgId)) foreign.push({ location, at: `seq ${seq}`, value: msgId.slice(0, 80) });
      }
      for (const [msgId, seqs] of seqsOf) if (seqs.length > 1) duplicates.push({ location, msgId, seqs });
    } else {
      for (const [key, msgId] of s.byKey) if (!attempted.has(msgId)) foreign.push({ location, at: `key ${key}`, value: msgId.slice(0, 80) });
    }
  }
  const unread = input.plan.filter((p) => !input.stored.has(p.location)).map((p) => p.location);
  return {
    locations: input.plan.length,
    acked: { object: input.acks.filter((a) => a.ack === "object").length, local: input.acks.filter((a) => a.ack === "local").length },
    objectLost,
    localLost,
    duplicates,
    foreign,
    unread,
    failures: summariseFailures(input.failures),
    watchers: analyseWatchers(input),
    recovery: (input.kills ?? []).map((k) => recoveryAfter(k, input.acks)),
  };
}

/**
 * A watcher's deliveries against the final state. After a fault a watcher may rewind (client/
 * watch.ts: it was shown changes that did not survive the move, and shows the new owner's history
 * from where its epoch began): a delivery whose revision is not above the one before it is then a
 * rewind, allowed only after a kill, and it supersedes every delivery at or above its revision —
 * those were shown under an older epoch (counted in `sawLost`, or, when the same write was applied
 * again at the new owner, delivered again after the rewind). Everything else is judged on what
 * stands after the rewinds: in order, once each, and every surviving change delivered.
 */
function analyseWatchers(input: AnalysisInput): WatcherFindings {
  const f: WatcherFindings = { watched: 0, outOfOrder: [], duplicates: [], missed: [], sawLost: [], rewinds: 0 };
  const firstKill = Math.min(...(input.kills ?? []).map((k) => k.at));
  for (const [location, seen] of input.watched) {
    f.watched += 1;
    const stored = input.stored.get(location);
    const bySeq = stored?.kind === "stream" ? stored.bySeq : new Map<number, string>();
    const standing: typeof seen = [];
    const superseded: typeof seen = [];
    for (const w of seen) {
      const last = standing.length > 0 ? standing[standing.length - 1]!.revision : -Infinity;
      if (w.revision <= last) {
        if (w.at < firstKill) {
          f.outOfOrder.push({ location, revision: w.revision, after: last });
        } else {
          f.rewinds += 1;
          while (standing.length > 0 && standing[standing.length - 1]!.revision >= w.revision) superseded.push(standing.pop()!);
        }
      }
      standing.push(w);
    }
    const delivered = new Map<string, number>();
    for (const w of standing) {
      if (w.op !== "set" || w.seq === undefined) continue;
      if (bySeq.get(w.seq) !== w.msgId) {
        f.sawLost.push({ location, seq: w.seq, msgId: w.msgId });
        continue;
      }
      const k = `${w.seq}\u0000${w.msgId}`;
      delivered.set(k, (delivered.get(k) ?? 0) + 1);
      if (delivered.get(k) === 2) f.duplicates.push({ location, seq: w.seq });
    }
    for (const w of superseded) {
      // Shown under an older epoch: lost, or applied again at the new owner (then delivered again).
      if (w.op === "set" && w.seq !== undefined && bySeq.get(w.seq) !== w.msgId) f.sawLost.push({ location, seq: w.seq, msgId: w.msgId });
    }
    for (const [seq, msgId] of bySeq) if (!delivered.has(`${seq}\u0000${msgId}`)) f.missed.push({ location, seq });
  }
  return f;
}

function recoveryAfter(kill: KillEvent, acks: AckRecord[]): Analysis["recovery"][number] {
  const first = new Map<string, number>();
  for (const a of acks) {
    if (a.ackedAt < kill.at) continue;
    const prev = first.get(a.location);
    if (prev === undefined || a.ackedAt < prev) first.set(a.location, a.ackedAt);
  }
  const delays = kill.locations.filter((l) => first.has(l)).map((l) => first.get(l)! - kill.at);
  const unrecovered = kill.locations.filter((l) => !first.has(l));
  return { at: kill.at, p50: percentile(delays, 0.5), p99: percentile(delays, 0.99), max: delays.length ? Math.max(...delays) : NaN, unrecovered };
}

export function percentile(values: number[], q: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}

export function summariseFailures(failures: FailureRecord[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const f of failures) out[f.code] = (out[f.code] ?? 0) + 1;
  return out;
}

/** A short JSON summary of an analysis for the test log (counts, a few examples). */
export function formatAnalysis(a: Analysis): string {
  return JSON.stringify({
    locations: a.locations,
    acked: a.acked,
    objectLost: a.objectLost.length,
    localLost: a.localLost.length,
    duplicates: a.duplicates.length,
    foreign: a.foreign.length,
    unread: a.unread.length,
    failures: a.failures,
    watchers: { watched: a.watchers.watched, outOfOrder: a.watchers.outOfOrder.length, duplicates: a.watchers.duplicates.length, missed: a.watchers.missed.length, sawLost: a.watchers.sawLost.length, rewinds: a.watchers.rewinds },
    recovery: a.recovery.map((r) => ({ p50: r.p50, p99: r.p99, max: r.max, unrecovered: r.unrecovered.length })),
    examples: { objectLost: a.objectLost.slice(0, 3), duplicates: a.duplicates.slice(0, 3), foreign: a.foreign.slice(0, 3), missed: a.watchers.missed.slice(0, 3) },
  });
}

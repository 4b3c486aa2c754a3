/**
 * Compaction policy (docs/compaction.md, "Policy and limits"): which own segments may be
 * compacted now, and how they group into runs; plus the byte-rate limit a compaction runs under.
 *
 * Invariants of a run:
 * - Its inputs are adjacent in log order (ordered by `order`: a normal segment's id, an output's
 *   `hi`), every one eligible: sealed (with a tier in the object store), not active, damaged or
 *   superseded, holding no open chunk, (with a tier) before the newest uploaded checkpoint's
 *   position, and above the highest pinned cut.
 * - It does not end between a chunk and the set record listing it: no segment after the run has a
 *   chunk span (../index/dead-chunks.ts) into it (the run is shortened until none does).
 * - Its kept bytes (bytes − dead) stay within `compactRunBytesMax` (one input may exceed it alone).
 * - It is worth doing: it drops something (dead bytes) or merges at least two segments.
 * Pure: the caller gathers the segment views.
 */
import type { Limits } from "./limits.js";

/** One own segment of the resolved set, as the policy sees it. */
export interface SegmentView {
  id: number;
  lo: number;
  hi: number;
  /** Raw bytes (0 when unknown: an evicted segment found at open). */
  bytes: number;
  dead: number;
  /** Why it may not be compacted now (undefined: eligible). */
  ineligible?: string;
}

export interface Run {
  inputs: SegmentView[];
  lo: number;
  hi: number;
  bytes: number;
  dead: number;
}

/** A segment's dead fraction (a segment of unknown size with dead bytes counts as all dead). */
export function deadFraction(s: SegmentView): number {
  if (s.bytes <= 0) return s.dead > 0 ? 1 : 0;
  return Math.min(1, s.dead / s.bytes);
}

/**
 * Groups eligible segments into runs. `segments` are the resolved own segments in log order;
 * `spans` maps a segment to the other segments holding chunks of its set records; `all` makes
 * every eligible segment a candidate whatever its dead fraction (the manual default).
 */
export function pickRuns(segments: readonly SegmentView[], spans: ReadonlyMap<number, readonly number[]>, limits: Limits, all: boolean): Run[] {
  const runs: Run[] = [];
  const orderIndex = new Map<number, number>();
  segments.forEach((s, i) => orderIndex.set(s.id, i));
  let cur: SegmentView[] = [];
  let kept = 0;
  const close = () => {
    const run = trimForSpans(cur, segments, spans, orderIndex);
    cur = [];
    kept = 0;
    if (run.length === 0) return;
    const dead = run.reduce((n, s) => n + s.dead, 0);
    if (run.length < 2 && dead <= 0) return;
    runs.push({ inputs: run, lo: run[0]!.lo, hi: run[run.length - 1]!.hi, bytes: run.reduce((n, s) => n + s.bytes, 0), dead });
  };
  for (const s of segments) {
    const candidate = s.ineligible === undefined && (all || deadFraction(s) >= limits.compactDeadFractionMin || s.bytes < limits.compactSmallBytes);
    if (!candidate) {
      close();
      continue;
    }
    const k = Math.max(0, s.bytes - s.dead);
    if (cur.length > 0 && kept + k > limits.compactRunBytesMax) close();
    cur.push(s);
    kept += k;
  }
  close();
  return runs;
}

/** Shortens a run from its end until no segment after it holds set records whose chunks lie in it. */
function trimForSpans(run: SegmentView[], segments: readonly SegmentView[], spans: ReadonlyMap<number, readonly number[]>, orderIndex: ReadonlyMap<number, number>): SegmentView[] {
  const out = [...run];
  while (out.length > 0) {
    const ids = new Set(out.map((s) => s.id));
    const last = orderIndex.get(out[out.length - 1]!.id)!;
    let tied = false;
    for (const [seg, list] of spans) {
      const at = orderIndex.get(seg);
      // A segment not in the resolved set (superseded, being reclaimed) has no span any more.
      if (at === undefined || at <= last) continue;
      if (list.some((c) => ids.has(c))) {
        tied = true;
        break;
      }
    }
    if (!tied) return out;
    out.pop();
  }
  return out;
}

/**
 * A token bucket of bytes per second: `take(n)` resolves once `n` bytes may be read or written.
 * Bursts are bounded by one second's worth (or `n` itself when larger); `stopped` ends the wait.
 */
export class ByteRate {
  private tokens: number;
  private last = performance.now();

  constructor(private readonly perSec: number) {
    this.tokens = perSec;
  }

  async take(n: number, stopped: () => boolean = () => false): Promise<void> {
    for (;;) {
      const now = performance.now();
      this.tokens = Math.min(Math.max(this.perSec, n), this.tokens + ((now - this.last) / 1000) * this.perSec);
      this.last = now;
      if (this.tokens >= n || stopped()) {
        this.tokens -= n;
        return;
      }
      const waitMs = Math.min(100, Math.ceil(((n - this.tokens) / this.perSec) * 1000));
      await new Promise((r) => setTimeout(r, waitMs));
    }
  }
}

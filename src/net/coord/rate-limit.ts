/**
 * Token buckets per key (a client), in bounded memory, on a caller-supplied monotonic clock.
 *
 * A bucket holds at most `burst` tokens and refills at `perSec`; `take(key)` spends one token or
 * refuses. Invariants: at most `keysMax` keys are remembered. A bucket that has refilled to full is
 * indistinguishable from a fresh one, so forgetting it changes no answer; when the map is full and
 * no bucket is full, further keys share one overflow bucket (they lose fairness, not the bound;
 * the overflow bucket is the one key allowed beyond `keysMax`).
 */
import { assert } from "../../assert.js";

interface Bucket {
  tokens: number;
  at: number;
}

export const OVERFLOW_KEY = "\0overflow";

export class TokenBuckets {
  private readonly buckets = new Map<string, Bucket>();
  private prunedAt = -Infinity;

  constructor(
    private readonly burst: number,
    private readonly perSec: number,
    private readonly keysMax: number,
    private readonly now: () => number,
  ) {
    assert(burst >= 1 && perSec > 0 && keysMax >= 1, "token bucket limits must be positive");
  }

  /** Spends one token of `key`; false when its bucket is empty. */
  take(key: string): boolean {
    const now = this.now();
    let bucket = this.buckets.get(key);
    if (bucket === undefined) {
      if (key !== OVERFLOW_KEY && this.buckets.size >= this.keysMax) {
        // Pruning walks every bucket: at most once a second, so a flood of new keys stays cheap.
        if (now - this.prunedAt >= 1000) this.prune(now);
        if (this.buckets.size >= this.keysMax) return this.take(OVERFLOW_KEY);
      }
      bucket = { tokens: this.burst, at: now };
      this.buckets.set(key, bucket);
    }
    bucket.tokens = Math.min(this.burst, bucket.tokens + ((now - bucket.at) * this.perSec) / 1000);
    bucket.at = now;
    if (bucket.tokens < 1) return false;
    bucket.tokens -= 1;
    return true;
  }

  /** Gives back a token taken for work that did not happen (e.g. no live server to assign to). */
  refund(key: string): void {
    const bucket = this.buckets.get(key) ?? this.buckets.get(OVERFLOW_KEY);
    if (bucket) bucket.tokens = Math.min(this.burst, bucket.tokens + 1);
  }

  get size(): number {
    return this.buckets.size;
  }

  private prune(now: number): void {
    this.prunedAt = now;
    for (const [key, b] of this.buckets) {
      if (b.tokens + ((now - b.at) * this.perSec) / 1000 >= this.burst) this.buckets.delete(key);
    }
  }
}

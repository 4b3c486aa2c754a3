/**
 * One exponential backoff for every retry loop (STYLE.md: "one backoff() with a seedable random
 * source", as nats.js core/src/util.ts has). Each delay is the current step times a jitter in
 * [0.5, 1.5), so retries of many clients or loops do not fall into step; the step doubles after
 * each failure up to `maxMs`, and `reset` starts over after a success. Pass a seeded `random`
 * (src/random.ts `mulberry32`) where a test must replay the same delays.
 */
import { assert } from "./assert.js";

export interface Backoff {
  /** The delay before the next attempt, in ms; each call doubles the step (up to maxMs). */
  next(): number;
  /** After a success: the next failure waits `initialMs` again. */
  reset(): void;
}

export function backoff(opts: { initialMs: number; maxMs: number; random?: () => number }): Backoff {
  assert(opts.initialMs > 0 && opts.maxMs >= opts.initialMs, "backoff needs 0 < initialMs <= maxMs");
  const random = opts.random ?? Math.random;
  let step = opts.initialMs;
  return {
    next() {
      const delay = Math.min(opts.maxMs, step * (0.5 + random()));
      step = Math.min(step * 2, opts.maxMs);
      return delay;
    },
    reset() {
      step = opts.initialMs;
    },
  };
}

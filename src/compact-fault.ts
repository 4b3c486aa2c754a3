/**
 * The test seam of compaction (like index/apply.ts `applyFaultHook`): `compactFaultHook.fn` is
 * called after each step of a compaction and of the reclaim; a throw there stops it right at that
 * point and leaves everything as a kill -9 would (the compactor cleans nothing up after it).
 * Re-exported by ./compact.ts.
 */
/**
 * The steps after which `compactFaultHook.fn` is called. A throw from the hook stops the
 * compaction right there, leaving everything as a kill -9 at that point would (no clean-up).
 */
export type CompactStep =
  | "picked" // a run is chosen, nothing written
  | "written" // the output file is complete and renamed into place (no marker)
  | "uploaded" // the output object is in the object store (no marker)
  | "object-marker" // the object marker is written
  | "local-marker" // the local marker is written (the switch has not happened)
  | "journal" // the switch journal's pieces are in the index (the switch has not begun)
  | "switch-begun" // the output is "switching" (the switch's first transaction)
  | "switch-chunk" // a piece of the switch is carried out (`seg`: its number)
  | "switch-pieces" // every piece is carried out, the switch's end is not
  | "switched" // the index points at the output; inputs are superseded
  | "reclaim-local" // an input's local file (and local marker) is deleted
  | "reclaim-object" // an input's object (and object marker) is deleted
  | "reclaimed"; // an input's segs entry is gone

/**
 * Test-only (like `applyFaultHook`): called after each step of a compaction; a throw simulates a
 * crash there. Never set in production code.
 */
export const compactFaultHook: { fn?: (step: CompactStep, info: { out?: number; seg?: number }) => void } = {};

/** Runs the hook; a throw is marked so the compactor leaves everything as it is (as a crash would). */
export function faultPoint(step: CompactStep, info: { out?: number; seg?: number } = {}): void {
  const fn = compactFaultHook.fn;
  if (!fn) return;
  try {
    fn(step, info);
  } catch (err) {
    throw new CompactCrash(err);
  }
}

/** A simulated crash from `compactFaultHook`: nothing is cleaned up after it. */
export class CompactCrash extends Error {
  constructor(override readonly cause: unknown) {
    super(`compaction stopped by the fault hook: ${(cause as Error)?.message ?? String(cause)}`);
  }
}


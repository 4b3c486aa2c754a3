/**
 * Drives a compaction's switch (docs/compaction.md, step 4) through its transactions
 * (./index/compact-switch.ts) from its journal (./index/switch-journal.ts): from the compactor,
 * each transaction in its own exclusive section with a turn of the event loop before it (reads,
 * writes and lease renewals run between chunks); at open, before anything is served, one after
 * the other.
 *
 * Invariants:
 * - A switch, once begun (its output "switching"), is only ever finished, never undone: from the
 *   piece its header says is next, then the end. Nothing deletes a "switching" output or its inputs.
 * - The fault points (./compact-fault.ts) "switch-chunk" (after each piece) and "switch-pieces"
 *   (all pieces done, the end not yet) let tests stop it anywhere, as a crash would.
 */
import { faultPoint } from "./compact-fault.js";
import { endSwitch, switchPiece } from "./index/compact-switch.js";
import type { LmdbIndex } from "./index/lmdb-index.js";
import { dropStrayPieces, pendingSwitches, readHeader, type SwitchHeader } from "./index/switch-journal.js";

/** One turn of the event loop (setImmediate: I/O callbacks and timers run first). */
export const eventLoopTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export interface SwitchDriver {
  index: LmdbIndex;
  /** Runs a transaction alone (the compactor: between group commits; at open: at once). */
  exclusive: <T>(fn: () => T) => Promise<T>;
  /** Awaited before each transaction (the compactor: an event-loop turn). */
  turn: () => Promise<void>;
  now: () => number;
  /** The active segment id (recorded with the superseded inputs). */
  after: () => number;
  /** Runs in the end's exclusive section, right after the end's transaction (the tier learns of it). */
  ended?: (h: SwitchHeader) => void;
  /** After each piece: pieces done and their total. */
  progress?: (done: number, total: number) => void;
}

/** Carries out the rest of output `out`'s switch; returns its header (undefined: no switch pending). */
export async function finishSwitch(d: SwitchDriver, out: number): Promise<SwitchHeader | undefined> {
  const h = readHeader(d.index, out);
  if (h === undefined) return undefined;
  const total = h.keptPieces + h.droppedPieces;
  for (let n = h.done; n < total; n++) {
    await d.turn();
    await d.exclusive(() => switchPiece(d.index, out, n));
    faultPoint("switch-chunk", { out, seg: n });
    d.progress?.(n + 1, total);
  }
  faultPoint("switch-pieces", { out });
  await d.turn();
  return d.exclusive(() => {
    const ended = endSwitch(d.index, out, d.now(), d.after());
    d.ended?.(ended);
    return ended;
  });
}

/**
 * Finishes every switch a crash (or an error) left half done, oldest first, and removes journal
 * pieces of switches that never began. Returns the outputs finished.
 */
export async function finishPendingSwitches(d: SwitchDriver): Promise<number[]> {
  const done: number[] = [];
  for (const out of pendingSwitches(d.index)) {
    await finishSwitch(d, out);
    done.push(out);
  }
  dropStrayPieces(d.index);
  return done;
}

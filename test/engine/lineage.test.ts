/**
 * The epoch lineage's bookkeeping (src/index/lineage.ts): append, bound (folding), lookup.
 *
 * The property test models a location's chain of owners: each takeover imports a prefix of the
 * previous owner's history (what it had shipped) and writes its own changes after it, and its
 * lineage is built exactly as a takeover builds it (the origin's lineage bounded to max - 1 by
 * extractRows, then the import's own entry appended by applyImport). For a watcher shown some
 * owner's history up to a cursor, `since` must never let it skip a change (the current history
 * agrees with what it was shown up to since), and with a lineage that kept every entry it must
 * not rewind over changes that did not change (the current history differs just past since).
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { appendLineage, boundLineage, isLineage, sinceFor, type LineageEntry } from "../../src/index/lineage.js";
import { resolveLimits } from "../../src/limits.js";

describe("lineage bookkeeping", () => {
  it("appends in epoch order, replacing an entry of the same or a later epoch", () => {
    let l: LineageEntry[] = [];
    l = appendLineage(l, 2, 5, 8);
    l = appendLineage(l, 4, 9, 8);
    expect(l).toEqual([
      [2, 5],
      [4, 9],
    ]);
    expect(appendLineage(l, 4, 7, 8)).toEqual([
      [2, 5],
      [4, 7],
    ]);
    expect(appendLineage(l, 3, 6, 8)).toEqual([
      [2, 5],
      [3, 6],
    ]);
  });

  it("bounds by folding the two oldest entries into one with the newer epoch and the lower start", () => {
    const l: LineageEntry[] = [
      [2, 7],
      [3, 4],
      [5, 9],
      [8, 12],
    ];
    expect(boundLineage(l, 3)).toEqual([
      [3, 4],
      [5, 9],
      [8, 12],
    ]);
    expect(boundLineage(l, 2)).toEqual([
      [5, 4],
      [8, 12],
    ]);
    // A watcher shown epoch 2 or 4 rewinds at least as far as with the whole lineage.
    for (const shown of [1, 2, 3, 4, 5, 7, 8]) expect(sinceFor(boundLineage(l, 2), shown, 20)).toBeLessThanOrEqual(sinceFor(l, shown, 20));
  });

  it("answers the lowest start of the epochs after the shown one, and the current start", () => {
    const l: LineageEntry[] = [
      [2, 3],
      [3, 5],
    ];
    expect(sinceFor(l, 1, 5)).toBe(3);
    expect(sinceFor(l, 2, 5)).toBe(5);
    expect(sinceFor(l, 3, 6)).toBe(6);
    expect(sinceFor([], 1, 6)).toBe(6);
    expect(sinceFor(l, 0, 2)).toBe(2);
  });

  it("takes only well-formed lineages from an index", () => {
    expect(isLineage([[1, 0], [3, 2]])).toBe(true);
    expect(isLineage([])).toBe(true);
    expect(isLineage([[3, 2], [1, 0]])).toBe(false);
    expect(isLineage([[1, -1]])).toBe(false);
    expect(isLineage([[1, 0, 2]])).toBe(false);
    expect(isLineage({})).toBe(false);
  });

  it("epochLineageMax is a named, checked limit", () => {
    expect(resolveLimits().epochLineageMax).toBe(64);
    expect(() => resolveLimits({ epochLineageMax: 1 })).toThrow(/epochLineageMax/);
  });
});

/** One owner of the chain: its epoch, its history (change ids by revision - 1), its lineage. */
interface Owner {
  epoch: number;
  history: number[];
  start: number;
  lineage: LineageEntry[];
}

const chainArb = fc.record({
  max: fc.integer({ min: 2, max: 6 }),
  first: fc.integer({ min: 0, max: 6 }),
  // Per takeover: how much of the previous owner's history it kept (a fraction: shipped), how many it writes, the epoch step.
  moves: fc.array(fc.record({ kept: fc.double({ min: 0, max: 1, noNaN: true }), writes: fc.integer({ min: 0, max: 5 }), step: fc.integer({ min: 1, max: 3 }) }), { minLength: 1, maxLength: 12 }),
  shownAt: fc.nat(),
  cursorAt: fc.double({ min: 0, max: 1, noNaN: true }),
});

function buildChain(c: { first: number; moves: Array<{ kept: number; writes: number; step: number }> }, max: number): Owner[] {
  let next = 1;
  const fresh = (n: number) => Array.from({ length: n }, () => next++);
  const owners: Owner[] = [{ epoch: 1, history: fresh(c.first), start: 0, lineage: [] }];
  for (const m of c.moves) {
    const prev = owners[owners.length - 1]!;
    const rev = Math.floor(m.kept * prev.history.length);
    const epoch = prev.epoch + m.step;
    // As a takeover: the origin's lineage bounded to max - 1 (extractRows), the import's entry appended (applyImport).
    const lineage = appendLineage(boundLineage(prev.lineage, max - 1), epoch, rev, max);
    owners.push({ epoch, history: [...prev.history.slice(0, rev), ...fresh(m.writes)], start: rev, lineage });
  }
  return owners;
}

describe("lineage over a chain of takeovers (fast-check)", () => {
  it("never lets a watcher skip a change, and with every entry kept rewinds only over changes that changed", () => {
    fc.assert(
      fc.property(chainArb, (c) => {
        const bounded = buildChain(c, c.max);
        const whole = buildChain(c, 1000);
        const n = bounded.length - 1;
        const shownIx = c.shownAt % n;
        const current = bounded[n]!;
        const shown = bounded[shownIx]!;
        const cursor = Math.floor(c.cursorAt * shown.history.length);
        for (const o of bounded) {
          expect(o.lineage.length).toBeLessThanOrEqual(c.max);
          expect(isLineage(o.lineage)).toBe(true);
        }
        const since = sinceFor(current.lineage, shown.epoch, current.start);
        // No gap: what the watcher keeps (up to min(since, cursor)) is the current history.
        for (let r = 0; r < Math.min(since, cursor); r++) expect(current.history[r]).toBe(shown.history[r]);
        // Bounded only rewinds further.
        const exact = sinceFor(whole[n]!.lineage, shown.epoch, whole[n]!.start);
        expect(since).toBeLessThanOrEqual(exact);
        // Exact with the whole lineage: just past since (within what was shown and what is there), the histories differ.
        if (exact < cursor && exact < current.history.length) expect(current.history[exact]).not.toBe(shown.history[exact]);
      }),
      { numRuns: 500 },
    );
  });
});

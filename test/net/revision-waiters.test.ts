/**
 * RevisionWaiters (src/net/client/revision-waiters.ts), the kv cache's waitFor queue: a position
 * update releases exactly the waiters at or below it, in revision order, each once; removed
 * (timed-out) waiters are never settled; failAll rejects the rest.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { RevisionWaiters } from "../../src/net/client/revision-waiters.js";

interface Probe {
  revision: number;
  id: number;
  settled: string[];
  resolve(): void;
  reject(err: Error): void;
}

const probe = (revision: number, id: number): Probe => {
  const p: Probe = { revision, id, settled: [], resolve: () => p.settled.push("resolved"), reject: (err) => p.settled.push(`rejected:${err.message}`) };
  return p;
};

type Step = { kind: "add"; revision: number } | { kind: "position"; at: number } | { kind: "remove"; pick: number };

describe("RevisionWaiters", () => {
  it("releases from the front only those at or below the position, in revision order", () => {
    const q = new RevisionWaiters<Probe>();
    const ps = [5, 3, 9, 3, 7].map((r, i) => probe(r, i));
    for (const p of ps) q.add(p);
    expect(q.release(2)).toEqual([]);
    expect(q.release(5).map((p) => p.id)).toEqual([1, 3, 0]); // 3, 3 (in arrival order), 5
    expect(q.size).toBe(2);
    expect(q.failAll(new Error("closed")).map((p) => p.id)).toEqual([4, 2]);
    expect(ps.map((p) => p.settled)).toEqual([["resolved"], ["resolved"], ["rejected:closed"], ["resolved"], ["rejected:closed"]]);
  });

  it("property: against a model, every waiter is settled at most once, and exactly when its revision is reached", () => {
    const step: fc.Arbitrary<Step> = fc.oneof(
      fc.record({ kind: fc.constant("add" as const), revision: fc.integer({ min: 0, max: 50 }) }),
      fc.record({ kind: fc.constant("position" as const), at: fc.integer({ min: -1, max: 50 }) }),
      fc.record({ kind: fc.constant("remove" as const), pick: fc.nat() }),
    );
    fc.assert(
      fc.property(fc.array(step, { maxLength: 200 }), (steps) => {
        const q = new RevisionWaiters<Probe>();
        const all: Probe[] = [];
        const waiting = new Set<Probe>();
        for (const s of steps) {
          if (s.kind === "add") {
            const p = probe(s.revision, all.length);
            all.push(p);
            waiting.add(p);
            q.add(p);
          } else if (s.kind === "position") {
            const expected = [...waiting].filter((p) => p.revision <= s.at).sort((a, b) => a.revision - b.revision || a.id - b.id);
            expect(q.release(s.at)).toEqual(expected);
            for (const p of expected) waiting.delete(p);
          } else if (all.length > 0) {
            const p = all[s.pick % all.length]!;
            expect(q.remove(p)).toBe(waiting.delete(p));
          }
          expect(q.size).toBe(waiting.size);
        }
        for (const p of all) expect(p.settled.length).toBeLessThanOrEqual(1);
        for (const p of waiting) expect(p.settled).toEqual([]);
      }),
    );
  });
});

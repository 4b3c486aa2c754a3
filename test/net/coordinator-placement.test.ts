/**
 * Placement is pure, so its properties are checked directly: deterministic answers, a roughly
 * even spread when assignments are counted as they are made, and a late server catching up.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { pairHash, pickServer, type Candidate } from "../../src/net/coord/coordinator-placement.js";

function assignAll(locations: string[], candidates: Candidate[]): Map<string, number> {
  const counts = new Map(candidates.map((c) => [c.id, 0]));
  for (const location of locations) {
    const chosen = pickServer(location, candidates);
    const c = candidates.find((x) => x.id === chosen)!;
    c.assigned += 1;
    counts.set(chosen, (counts.get(chosen) ?? 0) + 1);
  }
  return counts;
}

describe("coordinator placement", () => {
  it("hashes every pair into (0, 1) and the same way every time", () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), (server, location) => {
        const u = pairHash(server, location);
        expect(u).toBeGreaterThan(0);
        expect(u).toBeLessThan(1);
        expect(pairHash(server, location)).toBe(u);
      }),
    );
  });

  it("is deterministic and independent of candidate order", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.stringMatching(/^[a-z0-9]{1,8}$/), { minLength: 1, maxLength: 8 }),
        fc.array(fc.nat({ max: 100 }), { minLength: 8, maxLength: 8 }),
        fc.stringMatching(/^[a-z0-9]{1,12}(\/[a-z0-9]{1,12}){0,3}$/),
        (ids, loads, location) => {
          const candidates = ids.map((id, i) => ({ id, assigned: loads[i]! }));
          const answer = pickServer(location, candidates);
          expect(ids).toContain(answer);
          expect(pickServer(location, [...candidates].reverse())).toBe(answer);
        },
      ),
    );
  });

  it("spreads new locations evenly when counts are kept", () => {
    const candidates = ["a", "b", "c"].map((id) => ({ id, assigned: 0 }));
    const locations = Array.from({ length: 3000 }, (_, i) => `acct/user${i}/chat`);
    const counts = assignAll(locations, candidates);
    for (const n of counts.values()) expect(Math.abs(n - 1000)).toBeLessThan(100);
  });

  it("sends most new locations to a server that joins late until it has caught up", () => {
    const candidates = [
      { id: "old", assigned: 1000 },
      { id: "new", assigned: 0 },
    ];
    const counts = assignAll(Array.from({ length: 500 }, (_, i) => `loc${i}`), candidates);
    // The chance of "new" winning falls as it fills up: 1/(1+n) against 1/1001.
    expect(counts.get("new")).toBeGreaterThan(350);
  });
});

/**
 * Where a new location goes: weighted rendezvous (highest-random-weight) hashing over the live
 * servers, with each server's weight falling as its number of assigned locations grows.
 *
 * Why rendezvous: the choice depends only on (location, set of candidates, their loads), so it is
 * deterministic and reproducible in tests, and adding a server takes new locations from every
 * other server evenly instead of from one neighbour as on a ring. Why weighted by load: a server
 * that joins late (or restarted with an empty assignment table) should receive most new locations
 * until it has caught up, and a server already holding many should receive fewer. With weight
 * 1/(1+assigned) the chance that a server wins is proportional to its weight, so the assigned
 * counts of live servers converge instead of drifting apart.
 *
 * This module is pure: no clock, no I/O. Assignments are sticky, so the answer here matters only
 * the first time a location is seen.
 */
import { createHash } from "node:crypto";
import { assert } from "../../assert.js";

export interface Candidate {
  id: string;
  /** Locations already assigned to this server. */
  assigned: number;
}

const TWO_POW_48 = 2 ** 48;

/** A uniform number in (0, 1) for this (server, location) pair, the same on every machine. */
export function pairHash(serverId: string, location: string): number {
  const digest = createHash("sha256").update(serverId).update("\0").update(location).digest();
  return (digest.readUIntBE(0, 6) + 0.5) / TWO_POW_48;
}

/** The candidate that should hold `location`; candidates must be non-empty with distinct ids. */
export function pickServer(location: string, candidates: readonly Candidate[]): string {
  assert(candidates.length > 0, "pickServer needs at least one candidate");
  // One candidate wins whatever the scores: skip the hashing (a sha256 per candidate and location).
  if (candidates.length === 1) return candidates[0]!.id;
  let best: string | undefined;
  let bestScore = -Infinity;
  for (const c of candidates) {
    assert(Number.isSafeInteger(c.assigned) && c.assigned >= 0, `assigned count of ${c.id} must be a non-negative integer`);
    const weight = 1 / (1 + c.assigned);
    // -w / ln(u) is the standard weighted rendezvous score: the argmax is candidate i with
    // probability w_i / Σw over uniformly random u.
    const score = -weight / Math.log(pairHash(c.id, location));
    if (score > bestScore || (score === bestScore && best !== undefined && c.id < best)) {
      best = c.id;
      bestScore = score;
    }
  }
  assert(best !== undefined, "a candidate always wins");
  return best;
}

/**
 * What a server's Ownership (./ownership.ts) reports in its stats: grants, claims, pushes,
 * takeovers, confirms and handovers counted since it started, and the locations in its moved-away
 * quarantine (./unshipped-quarantine.ts).
 */
import type { QuarantinedLocation } from "./unshipped-quarantine.js";

export interface OwnershipStats {
  grants: number;
  claims: number;
  /** Grants taken from the coordinator's pushes (new locations that needed no claim). */
  pushed: number;
  /** Pushes ignored: stale, duplicate, for another incarnation or without its key. */
  pushesIgnored: number;
  takeovers: number;
  takeoverFailures: number;
  confirms: number;
  staleConfirms: number;
  handedOver: number;
  /** Locations that moved away while this server held records of them it never shipped. */
  quarantined: QuarantinedLocation[];
}

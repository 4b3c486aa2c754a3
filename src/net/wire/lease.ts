/**
 * The lease rule both sides follow (docs/failover.md, "Lease"), as pure functions of their own
 * monotonic clock, so the server (server/) and the coordinator (coord/leases.ts) cannot drift
 * apart and the model test (test/net/coordinator-lease-model.test.ts) checks exactly this code.
 *
 * - A server believes in its lease until (when it SENT the last renewal — or registration — that
 *   was answered ok) + leaseMs − leaseMarginMs, on its own monotonic clock (`performance.now()`).
 * - The coordinator honours it until (when it RECEIVED that renewal) + leaseMs + leaseMarginMs, on
 *   its own monotonic clock.
 *
 * Receiving happens after sending, so for any message delay the server stops strictly before the
 * coordinator does, as long as the two clocks' rates differ from real time by less than
 * leaseMarginMs / leaseMs each (then (L − M)(1 + ρ) < (L + M)(1 − ρ)).
 */

/** Until when (server's monotonic ms) a server may act on its lease; it must check `now < this`. */
export function leaseValidUntil(sentAtMono: number, leaseMs: number, leaseMarginMs: number): number {
  return sentAtMono + leaseMs - leaseMarginMs;
}

/** Until when (coordinator's monotonic ms) the coordinator must assume the server may act. */
export function leaseHonouredUntil(receivedAtMono: number, leaseMs: number, leaseMarginMs: number): number {
  return receivedAtMono + leaseMs + leaseMarginMs;
}

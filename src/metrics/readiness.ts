/**
 * The /readyz checks of a server and of a coordinator (./http-endpoint.ts evaluates them on every
 * probe). They read what the process holds now, so they can be set up before the server or
 * coordinator exists (its checks fail until it does):
 * - server: `recovered` (the store is open and recovered: the server started), `nats` (its
 *   connection is up, not reconnecting or closed), and for a coordinated server `lease` (it holds
 *   a valid lease from the coordinator);
 * - coordinator: `state` (its LMDB state is open and it answers: not stopping) and `nats`.
 */
import type { ReadinessChecks } from "./http-endpoint.js";
import type { NatsWatch } from "./nats-watch.js";

export interface ServerLive {
  server?: { leaseHeld(): boolean };
  nats?: NatsWatch;
}

export interface CoordinatorLive {
  coordinator?: { isOpen(): boolean };
  nats?: NatsWatch;
}

export function serverReadiness(live: ServerLive, coordinated: boolean): () => ReadinessChecks {
  return () => ({
    recovered: live.server !== undefined,
    nats: live.nats?.connected() ?? false,
    ...(coordinated ? { lease: live.server?.leaseHeld() ?? false } : {}),
  });
}

export function coordinatorReadiness(live: CoordinatorLive): () => ReadinessChecks {
  return () => ({ state: live.coordinator?.isOpen() ?? false, nats: live.nats?.connected() ?? false });
}

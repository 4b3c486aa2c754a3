/**
 * The metrics of the coordinator (../net/coord/coordinator.ts): requests by op (`locate` counts
 * the locates) with their handling time, errors answered by code, and, read at scrape time,
 * servers known and alive, assignments, grants pushed and refused replies.
 *
 * Labels: `op` from the coordinator's fixed subjects, `code` from errors.ts; never a server id or
 * a location.
 */
import { HotCounter, type HotCounterChild, type HotHistogramChild } from "./hot.js";
import { ErrorCounter, LATENCY_BUCKETS_SECONDS, counterFrom, gaugeFrom, histogram, type Metrics } from "./metrics.js";

export interface CoordinatorSources {
  servers: () => number;
  serversAlive: () => number;
  assignments: () => number;
  grantsPushed: () => number;
  repliesRefused: () => number;
}

/** The pre-bound metrics of one coordinator op. */
export interface CoordinatorOpMetrics {
  requests: HotCounterChild;
  seconds: HotHistogramChild;
}

export const COORDINATOR_OPS = ["register", "renew", "locate", "claim", "cut", "confirm", "release", "move", "drain", "servers"] as const;

export class CoordinatorMetrics {
  private readonly ops = new Map<string, CoordinatorOpMetrics>();
  readonly errors: ErrorCounter;

  constructor(metrics: Metrics, sources: CoordinatorSources) {
    const r = metrics.registry;
    const requests = new HotCounter(r, "strata_coordinator_requests_total", "Requests answered by the coordinator, by op (locate: clients locating locations)", ["op"]);
    const seconds = histogram(r, "strata_coordinator_request_seconds", "From a request's arrival to its answer, by op", LATENCY_BUCKETS_SECONDS, ["op"]);
    for (const op of COORDINATOR_OPS) this.ops.set(op, { requests: requests.child(op), seconds: seconds.child(op) });
    this.errors = new ErrorCounter(r, "strata_coordinator_errors_total", "Coordinator requests answered with an error, by error code");
    gaugeFrom(r, "strata_coordinator_servers", "Servers the coordinator knows", sources.servers);
    gaugeFrom(r, "strata_coordinator_servers_alive", "Servers holding a valid lease", sources.serversAlive);
    gaugeFrom(r, "strata_coordinator_assignments", "Locations assigned to a server (durable)", sources.assignments);
    counterFrom(r, "strata_coordinator_grants_pushed_total", "New locations granted by locate and pushed to their server", sources.grantsPushed);
    counterFrom(r, "strata_coordinator_replies_refused_total", "Requests dropped because their reply subject is outside the inbox prefix", sources.repliesRefused);
  }

  /** The metrics of `op` (one of COORDINATOR_OPS), bound once per subscription. */
  op(op: (typeof COORDINATOR_OPS)[number]): CoordinatorOpMetrics {
    return this.ops.get(op)!;
  }
}

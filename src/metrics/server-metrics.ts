/**
 * The metrics of one persistence server (../net/server/server.ts) on top of its store's
 * (./store-metrics.ts): requests and their bytes by kind and op (the wire op: `stream.append` is
 * kind "stream", op "append"), errors answered by code, the ack latency of writes by ack level,
 * the change feed, and — under a coordinator — the lease, the locations held and epoch changes.
 *
 * Labels come from fixed sets: the ops of the wire protocol (anything else is op "unknown"), the
 * error codes of errors.ts, the ack levels local/object. The hot path calls `request` (one map
 * lookup, two `inc`) and, for a write, `ack` (one `observe`); the rest is read at scrape time.
 */
import { HotCounter, type HotCounterChild, type HotHistogramChild } from "./hot.js";
import { ErrorCounter, LATENCY_BUCKETS_SECONDS, counterFrom, gaugeFrom, histogram, type Metrics } from "./metrics.js";

/** The ops of the wire protocol (server-handlers.ts), for the `op` label. */
export const WIRE_OPS = [
  "stream.append", "stream.appendMany", "stream.set", "stream.setMany", "stream.delete", "stream.deleteAll", "stream.config",
  "stream.get", "stream.getAll", "kv.set", "kv.setMany", "kv.delete", "kv.config", "kv.get", "kv.getAll", "kv.keys",
  "inventory", "changes", "upload", "chunk", "ping", "credit", "batch",
] as const;

/** What the server's metrics read at scrape time. */
export interface ServerSources {
  inFlight: () => number;
  changesPublished: () => number;
  repliesRefused: () => number;
  /** The lease and grants; undefined for a standalone server (no lease metrics then). */
  ownership?: () => { leaseHeld: boolean; leaseRemainingMs: number; incarnation: number | undefined; grants: number; epochsGranted: number; takeovers: number; takeoverFailures: number };
}

interface OpChildren {
  count: HotCounterChild;
  bytes: HotCounterChild;
}

export class ServerMetrics {
  private readonly ops = new Map<string, OpChildren>();
  private readonly unknownOp: OpChildren;
  readonly errors: ErrorCounter;
  private readonly ackLocal: HotHistogramChild;
  private readonly ackObject: HotHistogramChild;

  constructor(metrics: Metrics, sources: ServerSources) {
    const r = metrics.registry;
    const requests = new HotCounter(r, "strata_requests_total", "Requests received, by kind and wire op", ["kind", "op"]);
    const bytes = new HotCounter(r, "strata_request_bytes_total", "Request payload bytes received, by kind and wire op", ["kind", "op"]);
    for (const name of WIRE_OPS) {
      const dot = name.indexOf(".");
      const [kind, op] = dot < 0 ? ["none", name] : [name.slice(0, dot), name.slice(dot + 1)];
      this.ops.set(name, { count: requests.child(kind!, op!), bytes: bytes.child(kind!, op!) });
    }
    this.unknownOp = { count: requests.child("none", "unknown"), bytes: bytes.child("none", "unknown") };
    this.errors = new ErrorCounter(r, "strata_errors_total", "Requests answered with an error, by error code");
    const ack = histogram(r, "strata_ack_seconds", "From a write request's arrival to its answer, by ack level (local: fdatasync'd; object: in the object store)", LATENCY_BUCKETS_SECONDS, ["ack"]);
    this.ackLocal = ack.child("local");
    this.ackObject = ack.child("object");
    gaugeFrom(r, "strata_requests_in_flight", "Requests being handled", sources.inFlight);
    counterFrom(r, "strata_changes_published_total", "Change feed messages published", sources.changesPublished);
    counterFrom(r, "strata_replies_refused_total", "Requests dropped because their reply subject is outside the inbox prefix", sources.repliesRefused);
    const own = sources.ownership;
    if (own !== undefined) {
      gaugeFrom(r, "strata_lease_held", "1 while this server holds a valid lease from the coordinator, else 0", () => (own().leaseHeld ? 1 : 0));
      gaugeFrom(r, "strata_lease_remaining_seconds", "Time left on the lease", () => own().leaseRemainingMs / 1000);
      gaugeFrom(r, "strata_incarnation", "This server's incarnation number (0 before registering); a change means it registered again", () => own().incarnation ?? 0);
      gaugeFrom(r, "strata_locations_held", "Locations granted to this server now", () => own().grants);
      counterFrom(r, "strata_epoch_changes_total", "Locations taken under a new epoch (claims, pushed grants, takeovers)", () => own().epochsGranted);
      counterFrom(r, "strata_takeovers_total", "Locations taken over from another server's object-store data", () => own().takeovers);
      counterFrom(r, "strata_takeover_failures_total", "Takeovers that failed (the client retries)", () => own().takeoverFailures);
    }
  }

  /** A request of wire op `op` (any value: unknown ones count as "unknown") with `bytes` of payload. */
  request(op: unknown, bytes: number): void {
    const c = (typeof op === "string" ? this.ops.get(op) : undefined) ?? this.unknownOp;
    c.count.inc();
    c.bytes.inc(bytes);
  }

  /** A write answered `seconds` after it arrived, at ack level `ack` (the request's option; local unless "object"). */
  ack(ack: unknown, seconds: number): void {
    (ack === "object" ? this.ackObject : this.ackLocal).observe(seconds);
  }
}

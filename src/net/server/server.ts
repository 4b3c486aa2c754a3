/**
 * The persistence server: one Store put on core NATS (no JetStream).
 *
 * It subscribes to `P.w.<id>.>` and `P.r.<id>.>`, takes the location of every request from the
 * subject only, decodes the CBOR body as untrusted input and hands it to server-handlers.ts; any
 * failure becomes an error reply (code + message headers), never a crash, and nothing is written
 * before a request has passed validation. Every committed change (store.onChange) is published on
 * `P.c.<location tokens>` (server-changes.ts), in commit order, after the replies to the writes
 * that made it: the changes of a group commit are handed to the feed when the first reply is
 * published, so both leave in one socket write (nats.js writes what was published before its
 * next flush together), or else once the commit's callbacks and microtasks are done
 * (process.nextTick). The writer's answer thus never waits behind its change on either
 * connection's path, and one request at a time costs one socket write, not two.
 *
 * Shutdown: new requests are refused with UNAVAILABLE (clients retry elsewhere) while chunks and
 * credits of uploads and streamed replies in progress still flow; once those finish (or
 * `shutdownGraceMs` passes and they are aborted) the subscriptions are drained and the store closed.
 */
import { connect, ErrorCode, Events, nuid, type ConnectionOptions, type Msg, type NatsConnection, type Subscription } from "nats";
import { StrataError } from "../../errors.js";
import { refuseWarningCallbacks, silentLogger, type Logger } from "../../logger.js";
import { withTimeout } from "../../with-timeout.js";
import { Store } from "../../store.js";
import type { StoreOptions } from "../../config.js";
import type { Importer } from "../../tier/takeover.js";
import { validateLocation } from "../../validate.js";
import { chunkDataBytes } from "../wire/chunking.js";
import { resolveNetLimits, type NetLimits } from "../wire/net-limits.js";
import { handle, type RequestContext } from "./server-handlers.js";
import { Replies, type ReplyStats } from "./server-replies.js";
import { Uploads, type UploadStats } from "./server-uploads.js";
import { ChangeFeed } from "./server-changes.js";
import { DEFAULT_INBOX_PREFIX, DEFAULT_PREFIX, locationFromSubject, presenceSubject, replyClient, serverSubjects, validateInboxPrefix, validatePrefix, validateServerId, type SubjectClass } from "../wire/subjects.js";
import { claimPresence, type Presence } from "../wire/presence.js";
import { decodeMap, encode } from "../wire/wire-codec.js";
import { CoordLink } from "./coord-link.js";
import { Ownership, type OwnershipStats } from "./ownership.js";
import { parseHandoverRequest } from "../wire/coordinator-parsers.js";
import { handoverSubject } from "../wire/coordinator-protocol.js";
import { compactSubject } from "../wire/subjects.js";
import { CompactRequests } from "./server-compact.js";
import type { Change } from "../../types.js";
import type { Metrics } from "../../metrics/metrics.js";
import { ServerMetrics } from "../../metrics/server-metrics.js";

export interface ServerOptions {
  /** Server id: names this server's subjects (`P.w.<id>.>`) and, when `dir` is given, its store. */
  id: string;
  /** Subject prefix, default "strata". */
  prefix?: string;
  /** An open store to serve (the caller keeps owning it) … */
  store?: Store;
  /** … or a data directory to open (and close on stop). */
  dir?: string;
  storeOptions?: Omit<StoreOptions, "dir" | "id">;
  /** A connection to use (the caller keeps owning it), or server URL(s) to connect to. */
  nats: NatsConnection | string | string[];
  /** Auth, TLS, … when `nats` is given as URLs. */
  natsOptions?: Omit<ConnectionOptions, "servers">;
  limits?: Partial<NetLimits>;
  /**
   * Replies go only to subjects below this prefix (default "_INBOX", nats.js's default); requests
   * naming any other reply subject are dropped unanswered and counted in `repliesRefused`.
   * Set it to the common prefix of your clients' `inboxPrefix` options.
   */
  inboxPrefix?: string;
  /**
   * Serve every location asked for, with no coordinator, no lease and no failover: for one server
   * alone (tests, embedded use). Default false: the server registers with the coordinator and
   * serves only the locations granted to it while its lease holds (docs/failover.md).
   */
  standalone?: boolean;
  /**
   * Records the server's and its store's metrics into this registry (src/metrics/; one registry
   * per server). None: nothing is recorded.
   */
  metrics?: Metrics;
  /**
   * Where the server logs (pino-compatible, src/logger.ts): events with an `event` name and
   * fields. Also the store's logger when the server opens the store and `storeOptions` names
   * none. None: the server logs nothing.
   */
  logger?: Logger;
}

export interface ServerStats extends UploadStats, ReplyStats {
  requests: number;
  /** Requests dropped unanswered because their reply subject lies outside the inbox prefix. */
  repliesRefused: number;
  errors: number;
  inFlight: number;
  changesPublished: number;
  /** Leases and grants (absent for a standalone server). */
  ownership?: OwnershipStats & { incarnation?: number; leaseRemainingMs: number };
  /** What takeovers read of other servers' object-store data (absent without a tier). */
  takeover?: Importer["stats"];
}

export interface StrataServer {
  readonly id: string;
  readonly prefix: string;
  readonly store: Store;
  stats(): ServerStats;
  /** Whether the server may serve now: standalone, or holding a valid lease from the coordinator (/readyz). */
  leaseHeld(): boolean;
  /** Graceful stop: refuse new requests, finish those in flight, drain, close what we opened. */
  stop(): Promise<void>;
}

export async function startServer(options: ServerOptions): Promise<StrataServer> {
  const id = validateServerId(options.id);
  const prefix = validatePrefix(options.prefix ?? DEFAULT_PREFIX);
  const limits = resolveNetLimits(options.limits);
  const inboxPrefix = validateInboxPrefix(options.inboxPrefix ?? DEFAULT_INBOX_PREFIX);
  refuseWarningCallbacks(options, "startServer");
  const logger = options.logger ?? silentLogger;
  if ((options.store === undefined) === (options.dir === undefined)) {
    throw new StrataError("INVALID_ARGUMENT", "startServer needs exactly one of { store } or { dir }");
  }
  const ownStore = options.store === undefined;
  const store = options.store ?? (await Store.open({ ...(options.storeOptions?.logger === undefined ? { logger } : {}), ...options.storeOptions, dir: options.dir!, id }));
  let nc: NatsConnection | undefined;
  let bulk: NatsConnection | undefined;
  let presence: Presence;
  const ownNc = typeof options.nats === "string" || Array.isArray(options.nats);
  try {
    if (options.metrics !== undefined) store.instrument(options.metrics);
    const open = (name: string) => connect({ maxReconnectAttempts: -1, name, ...options.natsOptions, servers: options.nats as string | string[] });
    nc = ownNc ? await open(`strata-server-${id}`) : (options.nats as NatsConnection);
    chunkDataBytes(nc.info?.max_payload ?? 0, limits.frameOverheadBytes, limits.maxPayloadMinBytes);
    // Large replies and reply streams go on a connection of their own, so that a reader who does
    // not read (nats-server then stalls the connection that publishes to it) cannot hold up the
    // small replies everyone else is waiting for (reply-budget.ts). A connection the caller owns
    // is used for both.
    bulk = ownNc ? await open(`strata-server-${id}-bulk`) : nc;
    if (bulk !== nc && !(await mayPublishReplies(bulk, inboxPrefix))) {
      logger.warn(
        { event: "bulk_connection_shared", inboxPrefix },
        `the second ("bulk") NATS connection may not publish to reply subjects below "${inboxPrefix}" (nats-server's allow_responses admits only the connection that received a request); all replies share one connection, so a reader who does not read can delay others. Allow this server's user to publish to "${inboxPrefix}.>" to separate them (deploy/README.md).`,
      );
      await bulk.close();
      bulk = nc;
    }
    // No other server may run under this id (another data directory would answer for its locations).
    presence = await claimPresence(nc, presenceSubject(prefix, id), { role: `server ${id}`, dir: store.config.dir }, limits.presenceProbeMs, logger);
  } catch (err) {
    if (bulk !== undefined && bulk !== nc && !bulk.isClosed()) await bulk.close();
    if (ownNc && nc && !nc.isClosed()) await nc.close();
    if (ownStore) await store.close();
    throw err instanceof StrataError ? err : new StrataError("UNAVAILABLE", `cannot connect to NATS: ${(err as Error).message}`, { cause: err });
  }
  const server = new Server(id, prefix, store, nc, limits, logger, ownStore, ownNc, inboxPrefix, bulk, options.standalone === true, options.metrics, presence);
  server.start();
  // Once flushed, nats-server has the subscriptions: a request sent after startServer resolves,
  // on any connection, is answered rather than refused with "no responders".
  try {
    await nc.flush();
  } catch (err) {
    await server.stop().catch(() => undefined);
    throw new StrataError("UNAVAILABLE", `cannot reach NATS to subscribe: ${(err as Error).message}`, { cause: err });
  }
  return server;
}

class Server implements StrataServer {
  private readonly replies: Replies;
  private readonly uploads: Uploads;
  private readonly changes: ChangeFeed;
  private readonly compactions: CompactRequests;
  private readonly startedAt = Date.now();
  private readonly subs: Subscription[] = [];
  private readonly subjects;
  private unlisten: (() => void) | undefined;
  /** Committed changes not handed to the feed yet, in commit order, with the epoch held then. */
  private changesWaiting: Array<{ change: Change; epoch: number | undefined }> = [];
  private changesScheduled = false;
  private link: CoordLink | undefined;
  private ownership: Ownership | undefined;
  private inFlight = 0;
  /** Bytes of read requests in flight (readRequestBytesInFlightMax). */
  private readBytesInFlight = 0;
  private idleWaiters: Array<() => void> = [];
  private stopping: Promise<void> | undefined;
  private counters = { requests: 0, errors: 0, repliesRefused: 0 };
  /** Requests, errors, ack latency, lease (src/metrics/server-metrics.ts); bound in start(). */
  private metrics: ServerMetrics | undefined;

  constructor(
    readonly id: string,
    readonly prefix: string,
    readonly store: Store,
    private readonly nc: NatsConnection,
    private readonly limits: NetLimits,
    private readonly logger: Logger,
    private readonly ownStore: boolean,
    private readonly ownNc: boolean,
    private readonly inboxPrefix: string,
    private readonly bulk: NatsConnection,
    private readonly standalone: boolean,
    private readonly registry: Metrics | undefined,
    private readonly presence: Presence,
  ) {
    this.replies = new Replies(nc, limits, logger, store.limits.recordBytesMax + store.limits.scanReadBytesMax, bulk);
    this.uploads = new Uploads(this.replies, limits, store.limits.valueBytesMax);
    this.subjects = serverSubjects(prefix, id);
    this.changes = new ChangeFeed(nc, prefix, () => this.replies.maxPayload(), logger, limits.changeInlineBytesMax);
    this.compactions = new CompactRequests({ id, store, replies: this.replies, limits, inboxPrefix, logger });
  }

  start(): void {
    if (!this.standalone) {
      const link = new CoordLink(this.nc, {
        prefix: this.prefix,
        id: this.id,
        startedAt: this.startedAt,
        load: () => this.load(),
        onIncarnationOver: () => this.ownership?.clear(),
        onRenewed: () => this.ownership?.renewed(),
        onRegistered: (first) => this.ownership?.registered(first),
        logger: this.logger,
        requestTimeoutMs: this.limits.coordRequestTimeoutMs,
        retryMinMs: this.limits.coordRetryMinMs,
        retryMaxMs: this.limits.coordRetryMaxMs,
      });
      const ownership = new Ownership(link, this.store, {
        id: this.id,
        batchMax: this.limits.claimBatchMax,
        handoverShipMs: this.limits.handoverShipMs,
        handoverHoldMs: this.limits.handoverHoldMs,
        logger: this.logger,
      });
      this.link = link;
      this.ownership = ownership;
      this.store.objectCommit = (location) => ownership.confirm(location);
      this.subs.push(this.nc.subscribe(handoverSubject(this.prefix, this.id), { callback: (err, msg) => void this.onHandover(err, msg) }));
    }
    const ownership = this.ownership;
    if (this.registry !== undefined) this.metrics = this.serverMetrics(this.registry);
    // Changes are published only for locations held now: a server whose lease ran out (or that
    // handed a location over) must not speak for it, even for changes it committed before.
    this.unlisten = this.store.onChange((change) => {
      const epoch = ownership?.heldEpoch(change.location);
      if (ownership !== undefined && epoch === undefined) return;
      this.changesWaiting.push({ change, epoch });
      if (!this.changesScheduled) {
        this.changesScheduled = true;
        process.nextTick(() => this.handChanges());
      }
    });
    this.replies.onPublished = () => this.handChanges();
    for (const cls of ["w", "r"] as const) {
      this.subs.push(this.nc.subscribe(this.subjects[cls].wildcard, { callback: (err, msg) => this.onMessage(cls, err, msg) }));
    }
    // Operators ask for a compaction (strata compact --server); standalone or not (server-compact.ts).
    this.subs.push(this.nc.subscribe(compactSubject(this.prefix, this.id), { callback: (err, msg) => this.compactions.onRequest(err, msg) }));
    // Register last: the coordinator may send clients here as soon as it hears from us.
    this.link?.start();
  }

  /** The coordinator moves locations away (strata move / drain): seal, ship, answer the cuts. */
  private async onHandover(err: Error | null, msg: Msg): Promise<void> {
    if (err || !msg.reply) return;
    try {
      const { epochs } = parseHandoverRequest(decodeMap(msg.data, "a handover request"));
      const cuts = await this.ownership!.handover(epochs);
      msg.respond(encode({ cuts }));
    } catch (e) {
      this.replies.error(msg.reply, e);
    }
  }

  private onMessage(cls: SubjectClass, err: Error | null, msg: Msg): void {
    if (err) return this.logger.warn({ event: "subscription_error", class: cls, error: err.message }, `subscription error: ${err.message}`);
    if (!msg.reply) return; // nobody to answer; every request of the protocol has a reply subject
    // A reply subject outside the inbox namespace (e.g. someone's change feed) gets nothing.
    const client = replyClient(msg.reply, this.inboxPrefix);
    if (client === undefined) {
      this.counters.repliesRefused += 1;
      return;
    }
    this.counters.requests += 1;
    if (this.inFlight >= this.limits.requestsInFlightMax) {
      this.counters.errors += 1;
      this.metrics?.errors.countCode("UNAVAILABLE");
      return this.replies.error(msg.reply, new StrataError("UNAVAILABLE", `the server has ${this.inFlight} requests in flight; retry shortly`));
    }
    // Read requests wait for room in the reply budget; what they hold while they wait is bounded too.
    const readBytes = cls === "r" ? msg.data.byteLength : 0;
    if (readBytes > 0 && this.readBytesInFlight + readBytes > this.limits.readRequestBytesInFlightMax) {
      this.counters.errors += 1;
      this.metrics?.errors.countCode("UNAVAILABLE");
      return this.replies.error(msg.reply, new StrataError("UNAVAILABLE", `the server holds ${this.readBytesInFlight} bytes of read requests (readRequestBytesInFlightMax); retry shortly`));
    }
    this.inFlight += 1;
    this.readBytesInFlight += readBytes;
    this.process(cls, msg, client).finally(() => {
      this.inFlight -= 1;
      this.readBytesInFlight -= readBytes;
      if (this.inFlight === 0) for (const wake of this.idleWaiters.splice(0)) wake();
    });
  }

  private async process(cls: SubjectClass, msg: Msg, client: string): Promise<void> {
    const reply = msg.reply!;
    const metrics = this.metrics;
    const arrivedMs = metrics === undefined ? 0 : performance.now();
    try {
      const raw = locationFromSubject(msg.subject, this.subjects[cls].base);
      if (raw === undefined) throw new StrataError("INVALID_LOCATION", `subject "${msg.subject}" names no location`);
      const location = validateLocation(raw, this.store.limits);
      const body = decodeMap(msg.data, "the request");
      metrics?.request(body.op, msg.data.byteLength);
      if (this.stopping && body.op !== "chunk" && body.op !== "credit") {
        throw new StrataError("UNAVAILABLE", `server "${this.id}" is shutting down; retry (the location will be served again)`);
      }
      const ctx: RequestContext = { reply, client, location, cls, store: this.store, replies: this.replies, uploads: this.uploads, limits: this.limits, metrics, arrivedMs };
      // A ping only says this server is still there (client/server-probe.ts): answered at once,
      // not admitted, so it never waits for a grant the request it checks on may be waiting for.
      if (body.op === "ping") return await handle(ctx, body);
      // Under a coordinator a request runs only under a grant (chunks and credits belong to a
      // transfer that was admitted when it began), and counts as running for a handover.
      const ownership = body.op !== "chunk" && body.op !== "credit" ? this.ownership : undefined;
      if (ownership !== undefined) {
        const admitted = ownership.admit(location);
        const epoch = typeof admitted === "number" ? admitted : await admitted;
        ctx.epoch = epoch;
        ctx.epochSince = (shownEpoch) => ownership.sinceFor(location, shownEpoch);
        ctx.stillHeld = () => ownership.holds(location, epoch);
        ownership.started(location);
      }
      try {
        await handle(ctx, body);
      } finally {
        ownership?.finished(location);
      }
    } catch (err) {
      this.counters.errors += 1;
      metrics?.errors.count(err);
      if (!(err instanceof StrataError)) this.logger.error({ event: "unexpected_error", subject: msg.subject, error: (err as Error)?.message ?? String(err), stack: (err as Error)?.stack }, `unexpected error handling ${msg.subject}: ${(err as Error)?.stack ?? String(err)}`);
      this.replies.error(reply, err);
    }
  }

  /** Hands the waiting changes to the feed and publishes them now (see the file comment). */
  private handChanges(): void {
    this.changesScheduled = false;
    if (this.changesWaiting.length === 0) return;
    const waiting = this.changesWaiting;
    this.changesWaiting = [];
    for (const { change, epoch } of waiting) this.changes.add(change, epoch);
    this.changes.flush();
  }

  private serverMetrics(registry: Metrics): ServerMetrics {
    const { link, ownership } = this;
    return new ServerMetrics(registry, {
      inFlight: () => this.inFlight,
      changesPublished: () => this.changes.published,
      repliesRefused: () => this.counters.repliesRefused,
      ...(link !== undefined && ownership !== undefined
        ? {
            ownership: () => {
              const o = ownership.stats();
              return { leaseHeld: link.valid(), leaseRemainingMs: link.remainingMs(), incarnation: link.incarnation, grants: o.grants, epochsGranted: ownership.epochsGranted, takeovers: o.takeovers, takeoverFailures: o.takeoverFailures };
            },
          }
        : {}),
    });
  }

  leaseHeld(): boolean {
    return this.link === undefined || this.link.valid();
  }

  /** What each lease renewal reports; must be cheap (it runs every renewal). */
  private load(): { locations?: number } {
    const count = this.store.index.locs.getStats() as { entryCount?: number };
    return typeof count.entryCount === "number" ? { locations: count.entryCount } : {};
  }

  stats(): ServerStats {
    const stats: ServerStats = { ...this.counters, changesPublished: this.changes.published, inFlight: this.inFlight, ...this.uploads.stats(), ...this.replies.stats() };
    if (this.ownership && this.link) {
      const incarnation = this.link.incarnation;
      stats.ownership = { ...this.ownership.stats(), ...(incarnation !== undefined ? { incarnation } : {}), leaseRemainingMs: Math.round(this.link.remainingMs()) };
    }
    if (this.store.importer) stats.takeover = { ...this.store.importer.stats };
    return stats;
  }

  stop(): Promise<void> {
    this.stopping ??= this.shutdown();
    return this.stopping;
  }

  private async shutdown(): Promise<void> {
    this.compactions.stop();
    if (!(await this.idle(this.limits.shutdownGraceMs))) {
      const err = new StrataError("UNAVAILABLE", `server "${this.id}" stopped before this transfer finished; retry`);
      this.uploads.abortAll(err);
      this.replies.abortAll(err);
      await this.idle(1000);
    }
    for (const sub of this.subs) {
      try {
        await sub.drain();
      } catch {
        // the connection is already closed; nothing left to drain
      }
    }
    this.presence.close();
    this.unlisten?.();
    this.replies.stop();
    this.handChanges();
    this.changes.flush();
    try {
      if (!this.nc.isClosed()) await this.nc.flush();
    } catch {
      // best effort: replies in the outbound buffer are lost with a dead connection anyway
    }
    if (this.link) await this.letGo();
    if (this.ownStore) await this.store.close();
    if (this.ownNc && !this.nc.isClosed()) await this.nc.drain();
    if (this.bulk !== this.nc && !this.bulk.isClosed()) await this.bulk.drain();
  }

  /**
   * A graceful stop hands everything over: nothing is admitted any more, every record is sealed
   * and shipped, and only then is the lease released, so whoever serves these locations next
   * (this server restarted, or another) reads all of it. If shipping fails the lease is not
   * released; it runs out instead and the locations move after it like after a crash.
   */
  private async letGo(): Promise<void> {
    this.ownership?.clear();
    this.store.objectCommit = undefined;
    let shipped = false;
    if (this.store.tier !== undefined) {
      try {
        await withTimeout(this.store.shipAll(), this.limits.shutdownGraceMs, "shipping the last records", "TIMEOUT");
        shipped = true;
      } catch (err) {
        this.logger.warn({ event: "stop_ship_failed", error: (err as Error).message }, `could not ship the last records before stopping (${(err as Error).message}); the lease is left to run out`);
      }
    }
    await this.link!.stop(shipped);
  }

  private idle(ms: number): Promise<boolean> {
    if (this.inFlight === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      this.idleWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }
}

/**
 * Whether `conn` may publish to subjects below `inboxPrefix` on its own (not only as a response
 * to a request it received): publishes to a subject nobody listens on and flushes. nats-server
 * answers a denied publish with an error before the flush's PONG, so the answer is known then.
 */
async function mayPublishReplies(conn: NatsConnection, inboxPrefix: string): Promise<boolean> {
  let denied = false;
  const watching = (async () => {
    for await (const s of conn.status()) {
      if (s.type === Events.Error && s.data === ErrorCode.PermissionsViolation) denied = true;
    }
  })();
  conn.publish(`${inboxPrefix}.strata-probe.${nuid.next()}`);
  await conn.flush();
  // The status iterator hands events over asynchronously: let it catch up with the flush.
  await new Promise((resolve) => setImmediate(resolve));
  void watching;
  return !denied;
}

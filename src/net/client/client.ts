/**
 * StrataClient: the Store's API over core NATS.
 *
 *   const client = new StrataClient(nc, { prefix: "strata", timeoutMs: 10_000 });
 *   const s = client.stream("acct/alice/chat");   // StreamApi + watch()
 *   const kv = client.kv("acct/alice/settings");  // KvApi + watch()
 *
 * With `server` set, every location goes to that server id (single-server setups, tests);
 * otherwise the client asks the coordinator (`P.coord.locate`) and caches its answer per
 * location, asking again when a server stops answering. The client shares one reply
 * subscription for all its calls and never closes the NATS connection it was given.
 */
import type { NatsConnection } from "nats";
import { DEFAULT_LIMITS } from "../../limits.js";
import { validateLocation } from "../../validate.js";
import { Caller } from "./client-call.js";
import { KvClient } from "./client-kv.js";
import { StreamClient } from "./client-stream.js";
import { Transport } from "./client-transport.js";
import { resolveClientLimits, type ClientLimits } from "../wire/net-limits.js";
import { DEFAULT_PREFIX, validatePrefix, validateServerId } from "../wire/subjects.js";
import type { WatchDeps } from "./watch.js";

export interface StrataClientOptions {
  /** Subject prefix, default "strata". */
  prefix?: string;
  /** Budget of one call, retries included; default 10 000. */
  timeoutMs?: number;
  /** Pin every location to this server id and skip the coordinator. */
  server?: string;
  /** Inbox prefix for replies (nats-server permissions must allow subscribing to it); default "_INBOX". */
  inboxPrefix?: string;
  /** Other client limits (watch resync interval, retry backoff, …). */
  limits?: Partial<ClientLimits>;
}

export class StrataClient {
  readonly prefix: string;
  private readonly transport: Transport;
  private readonly caller: Caller;
  private readonly deps: WatchDeps;

  constructor(nc: NatsConnection, options: StrataClientOptions = {}) {
    this.prefix = validatePrefix(options.prefix ?? DEFAULT_PREFIX);
    const limits = resolveClientLimits({ ...options.limits, ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}) });
    const server = options.server === undefined ? undefined : validateServerId(options.server);
    this.transport = new Transport(nc, options.inboxPrefix);
    this.caller = new Caller(this.transport, this.prefix, limits, server);
    this.deps = { caller: this.caller, transport: this.transport, prefix: this.prefix, limits, watches: new Set() };
  }

  stream(location: string): StreamClient {
    return new StreamClient(this.caller, this.deps, validateLocation(location, DEFAULT_LIMITS));
  }

  kv(location: string): KvClient {
    return new KvClient(this.caller, this.deps, validateLocation(location, DEFAULT_LIMITS));
  }

  /** Ends watches, fails calls in flight with CLOSED and drops the reply subscription; the connection stays open. */
  close(): void {
    for (const watch of [...this.deps.watches]) watch.stop();
    this.transport.close();
  }
}

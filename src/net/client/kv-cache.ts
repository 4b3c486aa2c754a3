/**
 * A kv read cache, like JetStream KV's local cache: `client.kv(location).cache(options?)` keeps an
 * in-memory copy of one kv location, maintained by its watch (watch.ts: replay, then live changes
 * in commit order with no gap, across reconnects, restarts and moves), and serves get(), keys()
 * and getAll() from it without a request.
 *
 * Guarantees (and what the cache refuses rather than break them):
 * - `ready` resolves once the cache has caught up with the server: it then holds every write
 *   committed before the cache was made. get() before that waits for it (at most the client's
 *   `timeoutMs`, then UNAVAILABLE).
 * - Values are real: a value the change feed leaves out (`omitted`, above the server's
 *   `changeInlineBytesMax`) is fetched by the watch before the cache sees the change. A value too
 *   large for one feed message (`chunked`) is not held: get() of that key reads it from the server
 *   (getAll() too, leaving the key out if the server no longer has it); keys() does not read it.
 * - Read-after-write for writes made through the cache: set()/delete()/setMany() resolve only once
 *   the cache holds the revision they produced (or a later one). waitFor(revision) gives the same
 *   for writes made elsewhere (the KvClient, another process). Past the client's `timeoutMs` they
 *   reject with TIMEOUT, saying the write itself is stored.
 * - Staleness is bounded: get() serves only while the server was heard from (a catch-up reply, or
 *   live changes all applied) within `cacheStaleMsMax`. The watch asks the server at least every
 *   half of that when idle. When the server stops, restarts, the connection drops or the location
 *   moves, get() rejects with UNAVAILABLE (retryable) until the watch has caught up again; then it
 *   serves again. A move whose new owner lost writes the cache was shown (a rewind, watch.ts) makes
 *   the cache start over from a fresh replay (get() waits for it as before `ready`).
 * - Memory is bounded: the entries are counted in bytes (kv-cache-entries.ts). Past
 *   `cacheBytesMax` the cache drops every entry, stops its watch, and from then on rejects every
 *   call with TOO_LARGE. It never serves a partial copy; make a new cache with a larger limit.
 * - TTLs: an entry past its `expiresAt` (by this machine's clock) is not served, as the server
 *   hides it at once; the server's later `expire` change removes it.
 * Entries are served as held: do not modify a returned value's bytes.
 */
import { StrataError } from "../../errors.js";
import { checkCacheLimits, DEFAULT_LIMITS, resolveClientLimits, type ClientLimits } from "../../limits.js";
import type { Change, DeleteResult, ItemResult, KvEntry, KvSetOptions, KvWriteResult, WriteOptions } from "../../types.js";
import { validateKey, validateSeqOrZero } from "../../validate.js";
import type { KvClient } from "./client-kv.js";
import { CacheEntries, type Held } from "./kv-cache-entries.js";
import { RevisionWaiters, type RevisionWaiter } from "./revision-waiters.js";
import { Watcher, type WatchDeps, type WatchSink } from "./watch.js";

export interface KvCacheOptions {
  /** Most bytes held (default: the client's `cacheBytesMax`, 64 MiB). */
  cacheBytesMax?: number;
  /** Longest get() serves without hearing from the server (default: the client's `cacheStaleMsMax`, 10 s). */
  cacheStaleMsMax?: number;
}

interface Waiter extends RevisionWaiter {
  timer: NodeJS.Timeout;
}

export class KvCache {
  readonly location: string;
  /** Resolves once the cache has caught up with the server; rejects if it fails first. */
  readonly ready: Promise<void>;
  private readonly limits: ClientLimits;
  private readonly entries = new CacheEntries();
  private watcher: Watcher | undefined;
  /** Every change up to this revision is applied; -1 until the replay of the current watch ends. */
  private position = -1;
  /** When the server was last heard from with nothing left to apply (0: not since the last start). */
  private freshAt = 0;
  private caughtUp = false;
  private failure: StrataError | undefined;
  private readonly waiters = new RevisionWaiters<Waiter>();
  private readyWaiters: Array<{ resolve: () => void; reject: (err: StrataError) => void }> = [];
  private settleReady!: { resolve: () => void; reject: (err: StrataError) => void };
  /** Watch starts (1, plus one per rewind): for tests and stats. */
  starts = 0;

  constructor(
    private readonly kv: KvClient,
    private readonly deps: WatchDeps,
    options: KvCacheOptions = {},
  ) {
    this.location = kv.location;
    this.limits = resolveClientLimits({ ...deps.limits, ...definedOnly(options) });
    checkCacheLimits(this.limits);
    this.ready = new Promise<void>((resolve, reject) => (this.settleReady = { resolve, reject }));
    this.ready.catch(() => undefined); // a caller that never looks at `ready` sees failures on get()
    this.start();
  }

  /** The revision the cache has applied every change up to (-1 until its first replay ends). */
  get revision(): number {
    return this.position;
  }

  /** Bytes held, as counted against `cacheBytesMax`. */
  get bytes(): number {
    return this.entries.bytes;
  }

  /** The entry of `key` from the cache (no request), or from the server for a value too large to hold. */
  get(key: string): Promise<KvEntry | undefined> {
    if (!this.caughtUp && !this.failure) return this.whenCaughtUp().then(() => this.get(key));
    const refused = this.refusal();
    if (refused) return Promise.reject(refused);
    const held = this.entries.get(key);
    if (held === undefined) {
      try {
        validateKey(key, DEFAULT_LIMITS); // a held key is valid; only a miss needs checking
      } catch (err) {
        return Promise.reject(err);
      }
      return Promise.resolve(undefined);
    }
    const e = held.entry;
    if (e.expiresAt !== undefined && e.expiresAt <= Date.now()) return Promise.resolve(undefined);
    if (held.remote) return this.kv.get(key);
    return Promise.resolve(e);
  }

  /** The live keys, in key order, from the cache (no request, not even for values too large to hold). */
  async keys(): Promise<string[]> {
    return (await this.live()).map((held) => held.entry.key);
  }

  /**
   * The live entries, in key order, from the cache; values too large to hold are read from the
   * server, and a key the server no longer has is left out (its marker has no value to serve).
   */
  async getAll(): Promise<KvEntry[]> {
    const out: KvEntry[] = [];
    for (const held of await this.live()) {
      const entry = held.remote ? await this.kv.get(held.entry.key) : held.entry;
      if (entry !== undefined) out.push(entry);
    }
    return out;
  }

  /** The held entries not past their TTL, in key order, once the cache may serve. */
  private async live(): Promise<Held[]> {
    if (!this.caughtUp && !this.failure) await this.whenCaughtUp();
    const refused = this.refusal();
    if (refused) throw refused;
    const now = Date.now();
    const out: Held[] = [];
    for (const held of this.entries.entries()) {
      if (held.entry.expiresAt === undefined || held.entry.expiresAt > now) out.push(held);
    }
    return out.sort((a, b) => (a.entry.key < b.entry.key ? -1 : a.entry.key > b.entry.key ? 1 : 0));
  }

  /** kv.set, resolved once the cache holds its revision (read-after-write). */
  async set(key: string, value: Uint8Array, options?: KvSetOptions): Promise<KvWriteResult> {
    this.throwIfFailed();
    const result = await this.kv.set(key, value, options);
    await this.waitFor(result.revision);
    return result;
  }

  /** kv.delete, resolved once the cache holds its revision. */
  async delete(key: string, options?: WriteOptions): Promise<DeleteResult> {
    this.throwIfFailed();
    const result = await this.kv.delete(key, options);
    await this.waitFor(result.revision);
    return result;
  }

  /** kv.setMany, resolved once the cache holds every revision it produced. */
  async setMany(items: Array<{ key: string; value: Uint8Array; options?: KvSetOptions }>): Promise<Array<ItemResult<KvWriteResult>>> {
    this.throwIfFailed();
    const results = await this.kv.setMany(items);
    const last = Math.max(0, ...results.map((r) => (r.ok ? r.result.revision : 0)));
    await this.waitFor(last);
    return results;
  }

  /** Resolves once the cache holds `revision` of the location or a later one (e.g. a write made elsewhere). */
  waitFor(revision: number): Promise<void> {
    try {
      validateSeqOrZero(revision, "waitFor's revision"); // else it would wait timeoutMs for nothing
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.failure) return Promise.reject(this.failure);
    if (this.position >= revision) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        revision,
        resolve: () => {
          clearTimeout(waiter.timer);
          resolve();
        },
        reject: (err) => {
          clearTimeout(waiter.timer);
          reject(err);
        },
        timer: setTimeout(() => {
          this.waiters.remove(waiter);
          reject(new StrataError("TIMEOUT", `revision ${revision} of ${this.location} is stored, but the cache did not receive it within ${this.limits.timeoutMs} ms (it is catching up with the server); reads from the cache may not show it yet`));
        }, this.limits.timeoutMs),
      };
      this.waiters.add(waiter);
    });
  }

  /** Stops the watch and drops the entries; every later call rejects with CLOSED. */
  close(): void {
    this.fail(new StrataError("CLOSED", `the cache of ${this.location} is closed`));
  }

  private start(): void {
    this.starts += 1;
    this.position = -1;
    this.caughtUp = false;
    this.freshAt = 0;
    this.entries.clear();
    // The idle watch asks the server at most every cacheStaleMsMax / 2 (its resync jitter is
    // 0.5..1.5 × watchResyncMs), so an idle healthy cache stays fresh.
    const resyncMs = Math.max(1, Math.min(this.limits.watchResyncMs, Math.floor(this.limits.cacheStaleMsMax / 3)));
    const deps: WatchDeps = { ...this.deps, limits: { ...this.deps.limits, watchResyncMs: resyncMs } };
    const watcher: Watcher = new Watcher(deps, this.location, { kind: "kv" }, this.sinkFor(() => this.watcher === watcher));
    this.watcher = watcher;
    watcher.start();
  }

  /** The sink of one watch; `current()` is false once that watch has been replaced or stopped by us. */
  private sinkFor(current: () => boolean): WatchSink {
    return {
      change: (change: Change) => {
        if (!current()) return;
        this.entries.apply(change);
        if (this.entries.bytes > this.limits.cacheBytesMax) this.fail(tooLarge(this.location, this.limits.cacheBytesMax, this.entries.bytes));
      },
      position: (revision: number) => {
        if (!current()) return;
        this.position = revision;
        if (this.waiters.size > 0) this.waiters.release(revision);
      },
      caughtUp: (_revision: number, at: number) => {
        if (!current()) return;
        if (at > this.freshAt) this.freshAt = at;
        if (!this.caughtUp) {
          this.caughtUp = true;
          this.settleReady.resolve();
          for (const w of this.readyWaiters.splice(0)) w.resolve();
        }
      },
      rewound: () => {
        if (!current()) return;
        // Writes the cache applied did not survive the move: start over from a fresh replay.
        const old = this.watcher;
        this.watcher = undefined;
        old?.stop();
        this.start();
      },
      ended: (err: StrataError | undefined) => {
        if (!current()) return;
        this.fail(err ?? new StrataError("CLOSED", `the watch of ${this.location} ended (the StrataClient is closed)`));
      },
    };
  }

  /** Why get() must not serve now: failed, or not heard from the server within cacheStaleMsMax. */
  private refusal(): StrataError | undefined {
    if (this.failure) return this.failure;
    const age = Date.now() - this.freshAt;
    if (age <= this.limits.cacheStaleMsMax) return undefined;
    return new StrataError(
      "UNAVAILABLE",
      `the cache of ${this.location} has not heard from its server for ${age} ms (cacheStaleMsMax ${this.limits.cacheStaleMsMax}): it is catching up; retry, or read without the cache`,
    );
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure;
  }

  /** Resolves once caught up (after a start or rewind); rejects after timeoutMs or when the cache fails. */
  private whenCaughtUp(): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.readyWaiters = this.readyWaiters.filter((w) => w !== entry);
        reject(new StrataError("UNAVAILABLE", `the cache of ${this.location} has not caught up with its server within ${this.limits.timeoutMs} ms; retry, or read without the cache`));
      }, this.limits.timeoutMs);
      const entry = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (err: StrataError) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      this.readyWaiters.push(entry);
    });
  }

  /** Ends the cache for good: drops the entries, stops the watch, rejects everything waiting. */
  private fail(err: StrataError): void {
    if (this.failure) return;
    this.failure = err;
    const watcher = this.watcher;
    this.watcher = undefined;
    watcher?.stop();
    this.entries.clear();
    this.settleReady.reject(err);
    for (const w of this.readyWaiters.splice(0)) w.reject(err);
    this.waiters.failAll(err);
  }
}

function tooLarge(location: string, max: number, bytes: number): StrataError {
  return new StrataError(
    "TOO_LARGE",
    `the cache of ${location} needs more than cacheBytesMax (${max} bytes; it reached ${bytes}): raise cacheBytesMax, or read this kv without a cache. The cache has dropped its entries and is closed`,
  );
}

function definedOnly(options: KvCacheOptions): Partial<ClientLimits> {
  if (options === null || typeof options !== "object") throw new StrataError("INVALID_ARGUMENT", "cache options must be an object");
  const out: Partial<ClientLimits> = {};
  for (const [name, value] of Object.entries(options)) {
    if (name !== "cacheBytesMax" && name !== "cacheStaleMsMax") throw new StrataError("INVALID_ARGUMENT", `unknown cache option "${name}" (cacheBytesMax, cacheStaleMsMax)`);
    if (value !== undefined) out[name] = value as number;
  }
  return out;
}

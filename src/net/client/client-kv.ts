/**
 * A kv location over NATS: the KvApi of the in-process store, request for request, plus watch()
 * and cache() (a local read cache, kv-cache.ts).
 */
import type { DeleteResult, Inventory, ItemResult, KvApi, KvEntry, KvSetOptions, KvWriteResult, LocationLimits, WriteOptions } from "../../types.js";
import type { Caller, CallOptions, StreamedValue } from "./client-call.js";
import { getStreamed, type StreamedGet } from "./get-streamed.js";
import { KvCache, type KvCacheOptions } from "./kv-cache.js";
import { Watcher, type Watch, type WatchDeps } from "./watch.js";
import { compact, type WireMap } from "../wire/wire-codec.js";

export class KvClient implements KvApi {
  private readonly read: CallOptions;
  private readonly write: CallOptions;

  constructor(
    private readonly caller: Caller,
    private readonly deps: WatchDeps,
    readonly location: string,
  ) {
    this.read = { location, cls: "r", idempotent: true };
    this.write = { location, cls: "w", idempotent: false };
  }

  async set(key: string, value: Uint8Array, options?: KvSetOptions): Promise<KvWriteResult> {
    const body = value instanceof Uint8Array ? { value, build: (v?: Uint8Array) => setBody(key, v, options) } : compact({ op: "kv.set", key, value, options });
    return (await this.caller.request(this.write, body)) as KvWriteResult;
  }

  /** As set(), for a value read from `value.chunks` as it is sent (client-call.ts StreamedValue; the HTTP gateway's large PUTs). */
  async setStreamed(key: string, value: StreamedValue, options?: KvSetOptions): Promise<KvWriteResult> {
    return (await this.caller.request(this.write, { value, build: (v?: Uint8Array) => setBody(key, v, options) })) as KvWriteResult;
  }

  /** All items in one request and one reply; each item succeeds or fails on its own. */
  async setMany(items: Array<{ key: string; value: Uint8Array; options?: KvSetOptions }>): Promise<Array<ItemResult<KvWriteResult>>> {
    const list = Array.isArray(items) ? items.map((i) => compact({ key: i?.key, value: i?.value, options: i?.options })) : items;
    return (await this.caller.request(this.write, { op: "kv.setMany", items: list })) as Array<ItemResult<KvWriteResult>>;
  }

  async get(key: string): Promise<KvEntry | undefined> {
    return ((await this.caller.request(this.read, { op: "kv.get", key })) ?? undefined) as KvEntry | undefined;
  }

  /**
   * As get(), with the value read as it arrives (get-streamed.ts): `meta` is the entry without its
   * value plus `bytes`, and `chunks` yields the value while the server sends the next part only as
   * they are read (about a reply window held, never the value). Read the chunks to the end or
   * call `chunks.return()`: until then the server keeps the reply stream open.
   */
  async getStreamed(key: string): Promise<StreamedGet<Omit<KvEntry, "value">> | undefined> {
    const got = await getStreamed(this.caller, this.read, { op: "kv.get", key });
    if (got === undefined) return undefined;
    const r = got.result as unknown as KvEntry;
    const meta: Omit<KvEntry, "value"> & { bytes: number } = { key: r.key, revision: r.revision, timestamp: r.timestamp, bytes: got.bytes };
    if (r.headers !== undefined) meta.headers = r.headers;
    if (r.expiresAt !== undefined) meta.expiresAt = r.expiresAt;
    return { meta, chunks: got.chunks };
  }

  async delete(key: string, options?: WriteOptions): Promise<DeleteResult> {
    return (await this.caller.request(this.write, compact({ op: "kv.delete", key, options }))) as DeleteResult;
  }

  async *keys(): AsyncGenerator<string> {
    for await (const key of this.caller.items(this.read, { op: "kv.keys" })) yield key as string;
  }

  async *getAll(): AsyncGenerator<KvEntry> {
    for await (const entry of this.caller.items(this.read, { op: "kv.getAll" })) yield entry as KvEntry;
  }

  async inventory(): Promise<Inventory> {
    return (await this.caller.request(this.read, { op: "inventory" })) as Inventory;
  }

  /** Sets the location's limits (the whole configuration); resolves to the stored one (see StreamClient.config). */
  async config(limits: LocationLimits, options?: WriteOptions): Promise<LocationLimits> {
    return (await this.caller.request(this.write, compact({ op: "kv.config", limits, options }))) as LocationLimits;
  }

  /**
   * An in-memory copy of this kv, kept by its watch, that serves get()/keys()/getAll() without a
   * request and whose set()/delete() are read-after-write (kv-cache.ts: staleness and memory bounds).
   */
  cache(options?: KvCacheOptions): KvCache {
    return new KvCache(this, this.deps, options);
  }

  /** Replays the live entries (or the one of `key`), then follows their changes live. */
  watch(options: { key?: string } = {}): Watch {
    const filter = options.key === undefined ? { kind: "kv" as const } : { kind: "kv" as const, key: options.key };
    return new Watcher(this.deps, this.location, filter).start();
  }
}

/** The body of a kv.set, written out field by field (it runs for every set); unset fields are left out. */
function setBody(key: string, value: Uint8Array | undefined, options: KvSetOptions | undefined): WireMap {
  const body: WireMap = { op: "kv.set" };
  if (key !== undefined) body.key = key;
  if (value !== undefined) body.value = value;
  if (options !== undefined) body.options = options;
  return body;
}

/**
 * The public data model of Strata (DESIGN.md, "Data model and API"). The in-process `Store` and
 * the NATS `StrataClient` both implement `StreamApi` and `KvApi`, so an application can move
 * between them without changing a line.
 */

export type Headers = Record<string, string>;

export interface Message {
  value?: Uint8Array;
  headers?: Headers;
  /** Milliseconds since the epoch; the server's clock when the writer gives none. */
  timestamp?: number;
}

export interface StoredMessage {
  seq: number;
  value: Uint8Array;
  headers?: Headers;
  timestamp: number;
}

export type AckMode = "local" | "object";

export interface WriteOptions {
  /** "local" (default): after fsync to the local log. "object": after the segment is in the object store. */
  ack?: AckMode;
}

export interface AppendOptions extends WriteOptions {
  /** Exactly-once: a repeated msgId within the dedup window returns the original seq and writes nothing. */
  msgId?: string;
  /** Optimistic concurrency: the append fails with CONFLICT unless the stream's lastSeq equals this. */
  expectedLastSeq?: number;
}

export interface WriteResult {
  seq: number;
  /** The location's revision after this change. */
  revision: number;
  timestamp: number;
  /** True when a repeated msgId matched an earlier write and nothing was written. */
  duplicate?: boolean;
}

export interface DeleteResult {
  /** Whether anything was there to delete. */
  deleted: boolean;
  /** The location's revision after this call (unchanged when nothing was deleted). */
  revision: number;
}

export interface DeleteAllResult {
  count: number;
  revision: number;
}

export interface KvSetOptions extends WriteOptions {
  headers?: Headers;
  /** The entry expires (becomes invisible at once, then is deleted) this long after the write. */
  ttlMs?: number;
  /** The key's own revision; 0 means the key must not exist. Mismatch fails with CONFLICT. */
  expectedRevision?: number;
}

export interface KvWriteResult {
  revision: number;
  timestamp: number;
}

export interface KvEntry {
  key: string;
  value: Uint8Array;
  headers?: Headers;
  /** The location revision of the write that produced this value (the key's own revision). */
  revision: number;
  timestamp: number;
  /** When the entry expires, if it was written with a TTL. */
  expiresAt?: number;
}

export type Kind = "stream" | "kv";

/**
 * Per-location limits (docs/compaction.md, "Per-location limits"), set with `config(limits)` on a
 * handle. A field left out means no limit; `config` replaces the whole configuration.
 */
export interface LocationLimits {
  /** Stream: most messages; kv: most keys (an expired key counts until its expiry is swept). */
  maxMsgs?: number;
  /** Most value bytes, summed over the location. */
  maxBytes?: number;
  /** Stream only: messages older than this (by their timestamp) are dropped by the maintenance sweep. */
  maxAgeMs?: number;
  /** Largest value of one message or kv entry. */
  maxMsgBytes?: number;
  /** When maxMsgs/maxBytes are reached: "old" drops the oldest messages (stream default), "new" refuses with LIMIT (kv: only "new"). */
  discard?: "old" | "new";
  /** Stream only: how long a msgId is remembered; default the store's dedupWindowMs. 0: no dedup. */
  dedupWindowMs?: number;
  /** delete()/deleteAll() are refused with FORBIDDEN (limits and TTLs still drop). */
  denyDelete?: boolean;
  /** Kv only: the TTL of a set that gives no ttlMs. */
  ttlMs?: number;
}

export interface Inventory {
  location: string;
  /** Undefined while nothing was ever written to the location. */
  kind?: Kind;
  count: number;
  bytes: number;
  firstSeq?: number;
  lastSeq: number;
  revision: number;
  /**
   * The store's limits and the location's own configuration (`config`): `dedupWindowMs` is the one
   * that applies to the location (its own when configured).
   */
  limits: { valueBytesMax: number; headersBytesMax: number; keyBytesMax: number; dedupWindowMs: number } & Omit<LocationLimits, "dedupWindowMs">;
}

export type ItemResult<T> = { ok: true; result: T } | { ok: false; error: { code: string; message: string } };

export interface StreamApi {
  readonly location: string;
  append(message: Message, options?: AppendOptions): Promise<WriteResult>;
  appendMany(items: Array<{ message: Message; options?: AppendOptions }>): Promise<Array<ItemResult<WriteResult>>>;
  set(seq: number, message: Message, options?: WriteOptions): Promise<WriteResult>;
  setMany(items: Array<{ seq: number; message: Message; options?: WriteOptions }>): Promise<Array<ItemResult<WriteResult>>>;
  get(seq: number): Promise<StoredMessage | undefined>;
  delete(seq: number, options?: WriteOptions): Promise<DeleteResult>;
  getAll(options?: { startSeq?: number }): AsyncIterable<StoredMessage>;
  deleteAll(options?: { endSeq?: number } & WriteOptions): Promise<DeleteAllResult>;
  inventory(): Promise<Inventory>;
  /** Sets the location's limits (the whole configuration); resolves to the stored, normalised one. */
  config(limits: LocationLimits, options?: WriteOptions): Promise<LocationLimits>;
}

export interface KvApi {
  readonly location: string;
  set(key: string, value: Uint8Array, options?: KvSetOptions): Promise<KvWriteResult>;
  setMany(items: Array<{ key: string; value: Uint8Array; options?: KvSetOptions }>): Promise<Array<ItemResult<KvWriteResult>>>;
  get(key: string): Promise<KvEntry | undefined>;
  delete(key: string, options?: WriteOptions): Promise<DeleteResult>;
  keys(): AsyncIterable<string>;
  getAll(): AsyncIterable<KvEntry>;
  inventory(): Promise<Inventory>;
  /** Sets the location's limits (the whole configuration); resolves to the stored, normalised one. */
  config(limits: LocationLimits, options?: WriteOptions): Promise<LocationLimits>;
}

/**
 * One committed change, as reported by `Store.onChange` and published on the change feed.
 * For a large (chunked) value the change carries an empty value and `chunked: true`; a consumer
 * that needs the bytes reads them with `get`.
 */
export type Change =
  | { location: string; kind: "stream"; revision: number; timestamp: number; op: "set"; seq: number; message: StoredMessage; size: number; chunked: boolean }
  | { location: string; kind: "stream"; revision: number; timestamp: number; op: "delete"; seq: number }
  | { location: string; kind: "stream"; revision: number; timestamp: number; op: "deleteAll"; endSeq: number; count: number }
  | { location: string; kind: "kv"; revision: number; timestamp: number; op: "set"; key: string; entry: KvEntry; size: number; chunked: boolean }
  | { location: string; kind: "kv"; revision: number; timestamp: number; op: "delete" | "expire"; key: string };

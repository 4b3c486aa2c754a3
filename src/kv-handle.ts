/**
 * A kv location of an in-process Store. Only the last value of each key is kept; entries whose
 * TTL has passed are invisible at once, before the sweeper writes their expiry.
 */
import { StrataError } from "./errors.js";
import { inlineParts, valueParts, valuePartsFrom, type ValueParts } from "./large-value.js";
import type { LargeRead, Store } from "./store.js";
import { settleAll } from "./stream-handle.js";
import type { AckMode, DeleteResult, Headers, Inventory, ItemResult, KvApi, KvEntry, KvSetOptions, KvWriteResult, WriteOptions } from "./types.js";
import {
  validateAck,
  validateArray,
  validateHeaders,
  validateKey,
  validateSeqOrZero,
  validateOptionsObject,
  validateTtl,
  validateValue,
} from "./validate.js";
import type { WriteOp } from "./write-ops.js";

const SET_OPTIONS = ["headers", "ttlMs", "expectedRevision", "ack"] as const;

interface ValidSet {
  ack: AckMode;
  headers?: Headers;
  ttlMs?: number;
  expectedRevision?: number;
}

export class KvHandle implements KvApi {
  constructor(
    private readonly store: Store,
    readonly location: string,
  ) {}

  async set(key: string, value: Uint8Array, options?: KvSetOptions): Promise<KvWriteResult> {
    validateKey(key, this.store.limits);
    const v = validateValue(value, this.store.limits);
    const opts = this.setOptions(options);
    return this.write(key, inlineParts(this.store, v) ?? (await valueParts(this.store, v)), opts);
  }

  /** Sets a value that arrives in pieces, with memory bounded by one chunk. */
  async setFrom(key: string, source: AsyncIterable<Uint8Array>, options?: KvSetOptions): Promise<KvWriteResult> {
    validateKey(key, this.store.limits);
    const opts = this.setOptions(options);
    this.store.meta(this.location, "kv");
    return this.write(key, await valuePartsFrom(this.store, source), opts);
  }

  async setMany(items: Array<{ key: string; value: Uint8Array; options?: KvSetOptions }>): Promise<Array<ItemResult<KvWriteResult>>> {
    validateArray(items, this.store.limits, "setMany");
    return settleAll(items.map((item) => this.set(item?.key, item?.value, item?.options)));
  }

  async get(key: string): Promise<KvEntry | undefined> {
    return this.read(key, false);
  }

  /** @internal get() that leaves a large value unread: `large` reads it piece by piece (the server streams it). */
  getLazy(key: string): Promise<(KvEntry & { large?: LargeRead }) | undefined> {
    return this.read(key, true);
  }

  private async read(key: string, lazy: boolean): Promise<(KvEntry & { large?: LargeRead }) | undefined> {
    validateKey(key, this.store.limits);
    const meta = this.store.meta(this.location, "kv");
    if (!meta) return undefined;
    const e = this.store.index.kvs.get([meta.id, key]);
    if (!e || (e[5] !== 0 && e[5] <= this.store.config.clock())) return undefined;
    return this.store.readKvEntry(this.location, key, { seg: e[0], off: e[1], len: e[2] }, lazy);
  }

  async delete(key: string, options?: WriteOptions): Promise<DeleteResult> {
    validateKey(key, this.store.limits);
    const ack = validateAck(validateOptionsObject(options, ["ack"], "delete").ack);
    this.store.checkAck(ack);
    const { result, committed } = await this.store.submit({ op: "kdel", loc: this.location, key });
    await this.store.acked(ack, committed);
    return committed ? { deleted: true, revision: committed.record.t === "kdel" ? committed.record.rev : 0 } : (result as DeleteResult);
  }

  /** Live keys in key order, read a page at a time. */
  async *keys(): AsyncGenerator<string> {
    for (const { key } of this.liveEntries()) yield key;
  }

  /** Live entries in key order, read a page at a time. */
  async *getAll(): AsyncGenerator<KvEntry> {
    for (const { key, ptr } of this.liveEntries()) yield this.store.readKvEntry(this.location, key, ptr);
  }

  /** @internal getAll() that leaves large values unread (see getLazy). */
  async *getAllLazy(): AsyncGenerator<KvEntry & { large?: LargeRead }> {
    for (const { key, ptr } of this.liveEntries()) yield this.store.readKvEntry(this.location, key, ptr, true);
  }

  private *liveEntries(): Generator<{ key: string; ptr: { seg: number; off: number; len: number } }> {
    const meta = this.store.meta(this.location, "kv");
    if (!meta) return;
    const page = this.store.limits.scanPageSize;
    let after: string | undefined;
    for (;;) {
      const start: [number, string] = [meta.id, after === undefined ? "" : after + "\0"];
      const entries = [...this.store.index.kvs.getRange({ start, end: [meta.id + 1, ""], limit: page })];
      const now = this.store.config.clock();
      for (const { key, value } of entries) {
        after = key[1] as string;
        if (value[5] !== 0 && value[5] <= now) continue;
        yield { key: after, ptr: { seg: value[0], off: value[1], len: value[2] } };
      }
      if (entries.length < page) return;
    }
  }

  async inventory(): Promise<Inventory> {
    return this.store.inventory(this.location);
  }

  private setOptions(options: KvSetOptions | undefined): ValidSet {
    const o = validateOptionsObject(options, SET_OPTIONS, "kv set");
    const out: ValidSet = { ack: validateAck(o.ack) };
    this.store.checkAck(out.ack);
    const headers = validateHeaders(o.headers, this.store.limits);
    if (headers) out.headers = headers;
    const ttlMs = validateTtl(o.ttlMs, this.store.limits);
    if (ttlMs !== undefined) out.ttlMs = ttlMs;
    if (o.expectedRevision !== undefined) out.expectedRevision = validateSeqOrZero(o.expectedRevision, "expectedRevision");
    return out;
  }

  private async write(key: string, parts: ValueParts, opts: ValidSet): Promise<KvWriteResult> {
    // Built field by field (no object spreads): this runs for every set.
    const op: Extract<WriteOp, { op: "kset" }> = { op: "kset", loc: this.location, key, value: parts.value, size: parts.size };
    if (parts.chunks) op.chunks = parts.chunks;
    if (opts.headers) op.headers = opts.headers;
    if (opts.ttlMs !== undefined) op.ttlMs = opts.ttlMs;
    if (opts.expectedRevision !== undefined) op.expectedRevision = opts.expectedRevision;
    const { committed } = await this.store.submit(op);
    if (!committed || committed.record.t !== "kset") throw new StrataError("INTERNAL", "kv set produced no record");
    await this.store.acked(opts.ack, committed);
    return { revision: committed.record.rev, timestamp: committed.record.ts };
  }
}

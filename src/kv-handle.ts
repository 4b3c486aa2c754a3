/**
 * A kv location of an in-process Store. Only the last value of each key is kept; entries whose
 * TTL has passed are invisible at once, before the sweeper writes their expiry.
 * It depends on the `Engine` interface (./engine.ts), never on `Store`'s index, log or tier.
 */
import { assert } from "./assert.js";
import { inlineParts, valueParts, valuePartsFrom, type ValueParts } from "./large-value.js";
import { kvLive, type Engine, type LargeRead } from "./engine.js";
import type { Pointer } from "./log/record.js";
import { settleAll } from "./stream-handle.js";
import type { AckMode, DeleteResult, Headers, Inventory, ItemResult, KvApi, KvEntry, KvSetOptions, KvWriteResult, LocationLimits, WriteOptions } from "./types.js";
import {
  validateAck,
  validateArray,
  validateHeaders,
  validateKey,
  validateLocationLimits,
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
    private readonly engine: Engine,
    readonly location: string,
  ) {}

  async set(key: string, value: Uint8Array, options?: KvSetOptions): Promise<KvWriteResult> {
    validateKey(key, this.engine.limits);
    const v = validateValue(value, this.engine.limits);
    const opts = this.setOptions(options);
    return this.write(key, inlineParts(this.engine, v) ?? (await valueParts(this.engine, v)), opts);
  }

  /** Sets a value that arrives in pieces, with memory bounded by one chunk. */
  async setFrom(key: string, source: AsyncIterable<Uint8Array>, options?: KvSetOptions): Promise<KvWriteResult> {
    validateKey(key, this.engine.limits);
    const opts = this.setOptions(options);
    this.engine.meta(this.location, "kv");
    return this.write(key, await valuePartsFrom(this.engine, source), opts);
  }

  async setMany(items: Array<{ key: string; value: Uint8Array; options?: KvSetOptions }>): Promise<Array<ItemResult<KvWriteResult>>> {
    validateArray(items, this.engine.limits, "setMany");
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
    validateKey(key, this.engine.limits);
    const meta = this.engine.meta(this.location, "kv");
    if (!meta) return undefined;
    const e = this.engine.liveKv(meta.id, key, this.engine.now());
    return e ? this.engine.readKvEntry(this.location, key, e.ptr, lazy) : undefined;
  }

  async delete(key: string, options?: WriteOptions): Promise<DeleteResult> {
    validateKey(key, this.engine.limits);
    const ack = validateAck(validateOptionsObject(options, ["ack"], "delete").ack);
    this.engine.checkAck(ack);
    const { result, committed } = await this.engine.submit({ op: "kdel", loc: this.location, key });
    await this.engine.acked(ack, committed);
    return committed ? { deleted: true, revision: committed.record.t === "kdel" ? committed.record.rev : 0 } : (result as DeleteResult);
  }

  /** Live keys in key order, read a page at a time. */
  async *keys(): AsyncGenerator<string> {
    for (const { key } of this.liveEntries()) yield key;
  }

  /** Live entries in key order, read a page at a time. */
  async *getAll(): AsyncGenerator<KvEntry> {
    for (const { key, ptr } of this.liveEntries()) yield this.engine.readKvEntry(this.location, key, ptr);
  }

  /** @internal getAll() that leaves large values unread (see getLazy). */
  async *getAllLazy(): AsyncGenerator<KvEntry & { large?: LargeRead }> {
    for (const { key, ptr } of this.liveEntries()) yield this.engine.readKvEntry(this.location, key, ptr, true);
  }

  private *liveEntries(): Generator<{ key: string; ptr: Pointer }> {
    const meta = this.engine.meta(this.location, "kv");
    if (!meta) return;
    const page = this.engine.limits.scanPageSize;
    let after: string | undefined;
    for (;;) {
      const entries = this.engine.scanKv(meta.id, after, page);
      const now = this.engine.now();
      for (const e of entries) {
        after = e.key;
        if (!kvLive(e, now)) continue;
        yield { key: e.key, ptr: e.ptr };
      }
      if (entries.length < page) return;
    }
  }

  async inventory(): Promise<Inventory> {
    return this.engine.inventory(this.location);
  }

  /**
   * Sets the kv's limits (the whole configuration; docs/compaction.md "Per-location limits") and
   * resolves to the stored, normalised one. A kv refuses writes past its limits (LIMIT).
   */
  async config(limits: LocationLimits, options?: WriteOptions): Promise<LocationLimits> {
    const valid = validateLocationLimits(limits, "kv", this.engine.limits);
    const ack = validateAck(validateOptionsObject(options, ["ack"], "config").ack);
    this.engine.checkAck(ack);
    const { committed } = await this.engine.submit({ op: "config", loc: this.location, kind: "kv", limits: valid });
    assert(committed?.record.t === "config", "a config write commits a config record");
    await this.engine.acked(ack, committed);
    return committed.record.limits;
  }

  private setOptions(options: KvSetOptions | undefined): ValidSet {
    const o = validateOptionsObject(options, SET_OPTIONS, "kv set");
    const out: ValidSet = { ack: validateAck(o.ack) };
    this.engine.checkAck(out.ack);
    const headers = validateHeaders(o.headers, this.engine.limits);
    if (headers) out.headers = headers;
    const ttlMs = validateTtl(o.ttlMs, this.engine.limits);
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
    const { committed } = await this.engine.submit(op);
    assert(committed?.record.t === "kset", "a kv set commits a kset record");
    await this.engine.acked(opts.ack, committed);
    return { revision: committed.record.rev, timestamp: committed.record.ts };
  }
}

/**
 * A stream location of an in-process Store: validation at the edge, then the commit queue.
 * It depends on the `Engine` interface (./engine.ts), never on `Store`'s index, log or tier.
 */
import { assert } from "./assert.js";
import { StrataError } from "./errors.js";
import type { Committed } from "./commit-queue.js";
import type { WriteOp } from "./write-ops.js";
import type { Engine, LargeRead } from "./engine.js";
import type { StreamSetRecord } from "./log/record.js";
import { inlineParts, valueParts, valuePartsFrom, type ValueParts } from "./large-value.js";
import type {
  AckMode,
  AppendOptions,
  DeleteAllResult,
  DeleteResult,
  Inventory,
  ItemResult,
  LocationLimits,
  Message,
  StoredMessage,
  StreamApi,
  WriteOptions,
  WriteResult,
} from "./types.js";
import {
  validateAck,
  validateArray,
  validateHeaders,
  validateLocationLimits,
  validateMessage,
  validateMsgId,
  validateOptionsObject,
  validateSeq,
  validateSeqOrZero,
  validateTimestamp,
  type ValidMessage,
} from "./validate.js";

const APPEND_OPTIONS = ["msgId", "expectedLastSeq", "ack"] as const;
const WRITE_OPTIONS = ["ack"] as const;

interface ValidAppend {
  ack: AckMode;
  msgId?: string;
  expectedLastSeq?: number;
}

export class StreamHandle implements StreamApi {
  constructor(
    private readonly engine: Engine,
    readonly location: string,
  ) {}

  async append(message: Message, options?: AppendOptions): Promise<WriteResult> {
    const msg = validateMessage(message, this.engine.limits);
    const opts = this.appendOptions(options);
    return this.writeAppend(msg, inlineParts(this.engine, msg.value) ?? (await valueParts(this.engine, msg.value)), opts);
  }

  /** Appends a value that arrives in pieces, with memory bounded by one chunk. */
  async appendFrom(source: AsyncIterable<Uint8Array>, meta: Omit<Message, "value"> = {}, options?: AppendOptions): Promise<WriteResult> {
    const msg = this.metaOnly(meta);
    const opts = this.appendOptions(options);
    this.engine.meta(this.location, "stream");
    return this.writeAppend(msg, await valuePartsFrom(this.engine, source), opts);
  }

  async appendMany(items: Array<{ message: Message; options?: AppendOptions }>): Promise<Array<ItemResult<WriteResult>>> {
    validateArray(items, this.engine.limits, "appendMany");
    return settleAll(items.map((item) => this.append(item?.message, item?.options)));
  }

  async set(seq: number, message: Message, options?: WriteOptions): Promise<WriteResult> {
    validateSeq(seq);
    const msg = validateMessage(message, this.engine.limits);
    const ack = this.writeOptions(options);
    return this.writeSet(seq, msg, inlineParts(this.engine, msg.value) ?? (await valueParts(this.engine, msg.value)), ack);
  }

  /** Sets a value that arrives in pieces, with memory bounded by one chunk. */
  async setFrom(seq: number, source: AsyncIterable<Uint8Array>, meta: Omit<Message, "value"> = {}, options?: WriteOptions): Promise<WriteResult> {
    validateSeq(seq);
    const msg = this.metaOnly(meta);
    const ack = this.writeOptions(options);
    this.engine.meta(this.location, "stream");
    return this.writeSet(seq, msg, await valuePartsFrom(this.engine, source), ack);
  }

  async setMany(items: Array<{ seq: number; message: Message; options?: WriteOptions }>): Promise<Array<ItemResult<WriteResult>>> {
    validateArray(items, this.engine.limits, "setMany");
    return settleAll(items.map((item) => this.set(item?.seq, item?.message, item?.options)));
  }

  async get(seq: number): Promise<StoredMessage | undefined> {
    return this.read(seq, false);
  }

  /** @internal get() that leaves a large value unread: `large` reads it piece by piece (the server streams it). */
  getLazy(seq: number): Promise<(StoredMessage & { large?: LargeRead }) | undefined> {
    return this.read(seq, true);
  }

  private async read(seq: number, lazy: boolean): Promise<(StoredMessage & { large?: LargeRead }) | undefined> {
    validateSeq(seq);
    const meta = this.engine.meta(this.location, "stream");
    if (!meta) return undefined;
    const e = this.engine.streamPointer(meta.id, seq);
    return e ? this.engine.readMessage(this.location, seq, e.ptr, lazy) : undefined;
  }

  async delete(seq: number, options?: WriteOptions): Promise<DeleteResult> {
    validateSeq(seq);
    const ack = this.writeOptions(options);
    const { result, committed } = await this.engine.submit({ op: "sdel", loc: this.location, seq });
    await this.engine.acked(ack, committed);
    return committed ? { deleted: true, revision: committed.record.t === "sdel" ? committed.record.rev : 0 } : (result as DeleteResult);
  }

  async deleteAll(options?: { endSeq?: number } & WriteOptions): Promise<DeleteAllResult> {
    const o = validateOptionsObject(options, ["endSeq", "ack"], "deleteAll");
    const ack = validateAck(o.ack);
    this.engine.checkAck(ack);
    const op: { op: "sdelall"; loc: string; endSeq?: number } = { op: "sdelall", loc: this.location };
    if (o.endSeq !== undefined) op.endSeq = validateSeqOrZero(o.endSeq, "endSeq");
    const { result, committed } = await this.engine.submit(op);
    await this.engine.acked(ack, committed);
    return committed ? { count: committed.removed, revision: committed.record.t === "sdelall" ? committed.record.rev : 0 } : (result as DeleteAllResult);
  }

  /** Messages with seq ≥ startSeq in seq order, read a page at a time (bounded memory). */
  async *getAll(options?: { startSeq?: number }): AsyncGenerator<StoredMessage> {
    const o = validateOptionsObject(options, ["startSeq"], "getAll");
    const next = o.startSeq === undefined ? 1 : validateSeq(o.startSeq, "startSeq");
    const meta = this.engine.meta(this.location, "stream");
    if (!meta) return;
    for await (const rec of streamRecords(this.engine, this.location, meta.id, next)) {
      const msg: StoredMessage = { seq: rec.seq, value: rec.chunks ? await this.engine.valueOf(rec) : rec.value, timestamp: rec.ts };
      if (rec.headers) msg.headers = rec.headers;
      yield msg;
    }
  }

  async inventory(): Promise<Inventory> {
    return this.engine.inventory(this.location);
  }

  /**
   * Sets the stream's limits (the whole configuration; docs/compaction.md "Per-location limits")
   * and resolves to the stored, normalised one. Lowering a limit drops what no longer fits
   * (discard "old") in the same commit.
   */
  async config(limits: LocationLimits, options?: WriteOptions): Promise<LocationLimits> {
    const valid = validateLocationLimits(limits, "stream", this.engine.limits);
    const ack = this.writeOptions(options);
    const { committed } = await this.engine.submit({ op: "config", loc: this.location, kind: "stream", limits: valid });
    assert(committed?.record.t === "config", "a config write commits a config record");
    await this.engine.acked(ack, committed);
    return committed.record.limits;
  }

  private appendOptions(options: AppendOptions | undefined): ValidAppend {
    const o = validateOptionsObject(options, APPEND_OPTIONS, "append");
    const out: ValidAppend = { ack: validateAck(o.ack) };
    this.engine.checkAck(out.ack);
    const msgId = validateMsgId(o.msgId, this.engine.limits);
    if (msgId !== undefined) out.msgId = msgId;
    if (o.expectedLastSeq !== undefined) out.expectedLastSeq = validateSeqOrZero(o.expectedLastSeq, "expectedLastSeq");
    return out;
  }

  private writeOptions(options: WriteOptions | undefined): AckMode {
    const ack = validateAck(validateOptionsObject(options, WRITE_OPTIONS, "write").ack);
    this.engine.checkAck(ack);
    return ack;
  }

  private metaOnly(meta: Omit<Message, "value">): ValidMessage {
    const o = validateOptionsObject(meta, ["headers", "timestamp"], "message");
    const msg: ValidMessage = { value: new Uint8Array(0) };
    const headers = validateHeaders(o.headers, this.engine.limits);
    if (headers) msg.headers = headers;
    const timestamp = validateTimestamp(o.timestamp);
    if (timestamp !== undefined) msg.timestamp = timestamp;
    return msg;
  }

  private async writeAppend(msg: ValidMessage, parts: ValueParts, opts: ValidAppend): Promise<WriteResult> {
    // Built field by field (no object spreads): this runs for every append.
    const op: Extract<WriteOp, { op: "append" }> = { op: "append", loc: this.location, value: parts.value, size: parts.size };
    if (parts.chunks) op.chunks = parts.chunks;
    if (msg.headers) op.headers = msg.headers;
    if (msg.timestamp !== undefined) op.timestamp = msg.timestamp;
    if (opts.msgId !== undefined) op.msgId = opts.msgId;
    if (opts.expectedLastSeq !== undefined) op.expectedLastSeq = opts.expectedLastSeq;
    const { result, committed } = await this.engine.submit(op);
    if (committed) {
      await this.engine.acked(opts.ack, committed);
      return writeResult(committed);
    }
    // A repeated msgId: acknowledged as the original was, so with ack "object" only once the
    // original's record is in the object store too.
    const duplicate = result as WriteResult;
    if (opts.ack === "object") await this.engine.ackedSeq(this.location, duplicate.seq);
    return duplicate;
  }

  private async writeSet(seq: number, msg: ValidMessage, parts: ValueParts, ack: AckMode): Promise<WriteResult> {
    const op: Extract<WriteOp, { op: "sset" }> = { op: "sset", loc: this.location, seq, value: parts.value, size: parts.size };
    if (parts.chunks) op.chunks = parts.chunks;
    if (msg.headers) op.headers = msg.headers;
    if (msg.timestamp !== undefined) op.timestamp = msg.timestamp;
    const { committed } = await this.engine.submit(op);
    assert(committed !== undefined, "a stream set commits a record");
    await this.engine.acked(ack, committed);
    return writeResult(committed);
  }
}

function writeResult(c: Committed): WriteResult {
  assert(c.record.t === "sset", "a stream write commits an sset record");
  return { seq: c.record.seq, revision: c.record.rev, timestamp: c.record.ts };
}

/**
 * The stream records of location `locId` with seq >= `from`, in seq order, a page of the index at
 * a time (bounded memory); records that lie back to back are read together, and each is checked
 * to be the one asked for. Large values are left unread. Used by `getAll` and the wire scan.
 */
export async function* streamRecords(engine: Engine, location: string, locId: number, from: number): AsyncGenerator<StreamSetRecord> {
  const page = engine.limits.scanPageSize;
  for (let next = from; ; ) {
    const entries = engine.scanStream(locId, next, page);
    for (let at = 0; at < entries.length; ) {
      const run = await engine.readStreamRun(location, entries, at);
      yield* run.records;
      at = run.next;
    }
    if (entries.length < page) return;
    const last = entries[entries.length - 1]!.seq;
    // A seq past seqMax can only come from a log written before the bound was enforced.
    if (last >= Number.MAX_SAFE_INTEGER) return;
    next = last + 1;
  }
}

/** Runs writes together (they share group commits) and reports each one's outcome. */
export async function settleAll<T>(writes: Array<Promise<T>>): Promise<Array<ItemResult<T>>> {
  const settled = await Promise.allSettled(writes);
  return settled.map((s) =>
    s.status === "fulfilled"
      ? { ok: true as const, result: s.value }
      : { ok: false as const, error: { code: StrataError.is(s.reason) ? s.reason.code : "INTERNAL", message: (s.reason as Error)?.message ?? String(s.reason) } },
  );
}

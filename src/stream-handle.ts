/**
 * A stream location of an in-process Store: validation at the edge, then the commit queue.
 */
import { StrataError } from "./errors.js";
import type { Committed } from "./commit-queue.js";
import type { WriteOp } from "./write-ops.js";
import type { Pointer } from "./log/record.js";
import { locationEnd } from "./index/codecs.js";
import { inlineParts, valueParts, valuePartsFrom, type ValueParts } from "./large-value.js";
import type { LargeRead, Store } from "./store.js";
import type {
  AckMode,
  AppendOptions,
  DeleteAllResult,
  DeleteResult,
  Inventory,
  ItemResult,
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
    private readonly store: Store,
    readonly location: string,
  ) {}

  async append(message: Message, options?: AppendOptions): Promise<WriteResult> {
    const msg = validateMessage(message, this.store.limits);
    const opts = this.appendOptions(options);
    return this.writeAppend(msg, inlineParts(this.store, msg.value) ?? (await valueParts(this.store, msg.value)), opts);
  }

  /** Appends a value that arrives in pieces, with memory bounded by one chunk. */
  async appendFrom(source: AsyncIterable<Uint8Array>, meta: Omit<Message, "value"> = {}, options?: AppendOptions): Promise<WriteResult> {
    const msg = this.metaOnly(meta);
    const opts = this.appendOptions(options);
    this.store.meta(this.location, "stream");
    return this.writeAppend(msg, await valuePartsFrom(this.store, source), opts);
  }

  async appendMany(items: Array<{ message: Message; options?: AppendOptions }>): Promise<Array<ItemResult<WriteResult>>> {
    validateArray(items, this.store.limits, "appendMany");
    return settleAll(items.map((item) => this.append(item?.message, item?.options)));
  }

  async set(seq: number, message: Message, options?: WriteOptions): Promise<WriteResult> {
    validateSeq(seq);
    const msg = validateMessage(message, this.store.limits);
    const ack = this.writeOptions(options);
    return this.writeSet(seq, msg, inlineParts(this.store, msg.value) ?? (await valueParts(this.store, msg.value)), ack);
  }

  /** Sets a value that arrives in pieces, with memory bounded by one chunk. */
  async setFrom(seq: number, source: AsyncIterable<Uint8Array>, meta: Omit<Message, "value"> = {}, options?: WriteOptions): Promise<WriteResult> {
    validateSeq(seq);
    const msg = this.metaOnly(meta);
    const ack = this.writeOptions(options);
    this.store.meta(this.location, "stream");
    return this.writeSet(seq, msg, await valuePartsFrom(this.store, source), ack);
  }

  async setMany(items: Array<{ seq: number; message: Message; options?: WriteOptions }>): Promise<Array<ItemResult<WriteResult>>> {
    validateArray(items, this.store.limits, "setMany");
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
    const meta = this.store.meta(this.location, "stream");
    if (!meta) return undefined;
    const e = this.store.index.seqs.get([meta.id, seq]);
    return e ? this.store.readMessage(this.location, seq, { seg: e[0], off: e[1], len: e[2] }, lazy) : undefined;
  }

  async delete(seq: number, options?: WriteOptions): Promise<DeleteResult> {
    validateSeq(seq);
    const ack = this.writeOptions(options);
    const { result, committed } = await this.store.submit({ op: "sdel", loc: this.location, seq });
    await this.store.acked(ack, committed);
    return committed ? { deleted: true, revision: committed.record.t === "sdel" ? committed.record.rev : 0 } : (result as DeleteResult);
  }

  async deleteAll(options?: { endSeq?: number } & WriteOptions): Promise<DeleteAllResult> {
    const o = validateOptionsObject(options, ["endSeq", "ack"], "deleteAll");
    const ack = validateAck(o.ack);
    this.store.checkAck(ack);
    const op: { op: "sdelall"; loc: string; endSeq?: number } = { op: "sdelall", loc: this.location };
    if (o.endSeq !== undefined) op.endSeq = validateSeqOrZero(o.endSeq, "endSeq");
    const { result, committed } = await this.store.submit(op);
    await this.store.acked(ack, committed);
    return committed ? { count: committed.removed, revision: committed.record.t === "sdelall" ? committed.record.rev : 0 } : (result as DeleteAllResult);
  }

  /** Messages with seq ≥ startSeq in seq order, read a page at a time (bounded memory). */
  async *getAll(options?: { startSeq?: number }): AsyncGenerator<StoredMessage> {
    const o = validateOptionsObject(options, ["startSeq"], "getAll");
    let next = o.startSeq === undefined ? 1 : validateSeq(o.startSeq, "startSeq");
    const meta = this.store.meta(this.location, "stream");
    if (!meta) return;
    const page = this.store.limits.scanPageSize;
    for (;;) {
      const entries = scanPage(this.store, meta.id, next, page);
      for (let at = 0; at < entries.length; ) {
        const run = await this.store.readStreamRun(this.location, entries, at);
        for (const rec of run.records) {
          const msg: StoredMessage = { seq: rec.seq, value: rec.chunks ? await this.store.valueOf(rec) : rec.value, timestamp: rec.ts };
          if (rec.headers) msg.headers = rec.headers;
          yield msg;
        }
        at = run.next;
      }
      if (entries.length < page) return;
      const last = entries[entries.length - 1]!.seq;
      // A seq past seqMax can only come from a log written before the bound was enforced.
      if (last >= Number.MAX_SAFE_INTEGER) return;
      next = last + 1;
    }
  }

  async inventory(): Promise<Inventory> {
    return this.store.inventory(this.location);
  }

  private appendOptions(options: AppendOptions | undefined): ValidAppend {
    const o = validateOptionsObject(options, APPEND_OPTIONS, "append");
    const out: ValidAppend = { ack: validateAck(o.ack) };
    this.store.checkAck(out.ack);
    const msgId = validateMsgId(o.msgId, this.store.limits);
    if (msgId !== undefined) out.msgId = msgId;
    if (o.expectedLastSeq !== undefined) out.expectedLastSeq = validateSeqOrZero(o.expectedLastSeq, "expectedLastSeq");
    return out;
  }

  private writeOptions(options: WriteOptions | undefined): AckMode {
    const ack = validateAck(validateOptionsObject(options, WRITE_OPTIONS, "write").ack);
    this.store.checkAck(ack);
    return ack;
  }

  private metaOnly(meta: Omit<Message, "value">): ValidMessage {
    const o = validateOptionsObject(meta, ["headers", "timestamp"], "message");
    const msg: ValidMessage = { value: new Uint8Array(0) };
    const headers = validateHeaders(o.headers, this.store.limits);
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
    const { result, committed } = await this.store.submit(op);
    if (committed) {
      await this.store.acked(opts.ack, committed);
      return writeResult(committed);
    }
    // A repeated msgId: acknowledged as the original was, so with ack "object" only once the
    // original's record is in the object store too.
    const duplicate = result as WriteResult;
    if (opts.ack === "object") await this.store.ackedSeq(this.location, duplicate.seq);
    return duplicate;
  }

  private async writeSet(seq: number, msg: ValidMessage, parts: ValueParts, ack: AckMode): Promise<WriteResult> {
    const op: Extract<WriteOp, { op: "sset" }> = { op: "sset", loc: this.location, seq, value: parts.value, size: parts.size };
    if (parts.chunks) op.chunks = parts.chunks;
    if (msg.headers) op.headers = msg.headers;
    if (msg.timestamp !== undefined) op.timestamp = msg.timestamp;
    const { committed } = await this.store.submit(op);
    if (!committed) throw new StrataError("INTERNAL", "set produced no record");
    await this.store.acked(ack, committed);
    return writeResult(committed);
  }
}

function writeResult(c: Committed): WriteResult {
  if (c.record.t !== "sset") throw new StrataError("INTERNAL", "a stream write committed an unexpected record");
  return { seq: c.record.seq, revision: c.record.rev, timestamp: c.record.ts };
}

/** Up to `limit` index entries of a stream with seq >= `from`, in seq order: one page of a scan. */
export function scanPage(store: Store, locId: number, from: number, limit: number): Array<{ seq: number; ptr: Pointer }> {
  const entries: Array<{ seq: number; ptr: Pointer }> = [];
  for (const { key, value } of store.index.seqs.getRange({ start: [locId, from], end: locationEnd(locId), limit })) {
    entries.push({ seq: key[1] as number, ptr: { seg: value[0], off: value[1], len: value[2] } });
  }
  return entries;
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

/**
 * The ops of the wire protocol and what each does with the store. The location always comes from
 * the subject (see server.ts); bodies only carry the op's arguments, and the store handles
 * validate those exactly as they do in-process. Here we only check that a body has no fields an
 * op does not know, and that an op arrives on its subject class: writes on `P.w…`, reads on
 * `P.r…`, so nats-server permissions on those classes really decide who may do what.
 *
 * Write ops (request → `{ ok }`):
 *   stream.append {message, options?}      stream.appendMany {items}
 *   stream.set {seq, message, options?}    stream.setMany {items}
 *   stream.delete {seq, options?}          stream.deleteAll {options?}
 *   kv.set {key, value, options?}          kv.setMany {items}      kv.delete {key, options?}
 *   stream.config {limits, options?}       kv.config {limits, options?}   → {ok: the stored limits}
 *   upload {head, bytes} + chunk {upload, k, data}  (see server-uploads.ts)
 * Read ops:
 *   stream.get {seq} → {ok: message|null}  kv.get {key} → {ok: entry|null}   inventory {} → {ok}
 *   changes {after, limit?} → {ok: {changes, next, more}}  (store.changesSince, bounded in bytes)
 *   stream.getAll {startSeq?}, kv.getAll {key?}, kv.keys {} → streamed batches, then
 *     {end: {base, count}}; base (also on every batch) is the location's revision before the scan
 * Both classes: ping {} → {ok: {}} (a client's check that this server is still there while a
 *   request waits, client/server-probe.ts; answered at once, without a grant: server.ts);
 *   credit {stream, n?, cancel?} (flow control of streamed replies; no reply);
 *   batch {items: [encoded request, …]} → {ok: [ItemResult, …]}: requests a client coalesced
 *   (wire/client-coalesce.ts), each one of COALESCED_OPS of this subject's class, run in order and
 *   each on its own, exactly as separate requests would be; a get of a large value answers
 *   `alone: true` instead, and the client asks for it in a request of its own.
 */
import { StrataError } from "../../errors.js";
import { settleAll } from "../../stream-handle.js";
import { COALESCED_OPS } from "../wire/client-coalesce.js";
import { configLimitsUntrusted } from "../wire/config-wire.js";
import type { KvHandle } from "../../kv-handle.js";
import type { Store } from "../../store.js";
import type { StreamHandle } from "../../stream-handle.js";
import type { Change, ItemResult } from "../../types.js";
import { describeValue, validateNonNegativeInt, validateSeqOrZero } from "../../validate.js";
import type { NetLimits } from "../wire/net-limits.js";
import { isLargeRead, streamBatches } from "./reply-stream.js";
import type { Replies, ReplyTarget } from "./server-replies.js";
import type { Uploads } from "./server-uploads.js";
import { ASK_ALONE, BatchReads, holdForRead } from "./server-reads.js";
import { scanKv, scanStream } from "./store-scan.js";
import type { SubjectClass } from "../wire/subjects.js";
import { decodeMap, estimateBytes, isPlainMap, type WireMap } from "../wire/wire-codec.js";
import type { ServerMetrics } from "../../metrics/server-metrics.js";

export interface RequestContext extends ReplyTarget {
  /** Who sent it, for per-client limits: the first token of its reply inbox (wire/subjects.ts). */
  client: string;
  store: Store;
  replies: Replies;
  uploads: Uploads;
  limits: NetLimits;
  /**
   * Under a coordinator: whether the location is still held under the epoch it was admitted at
   * (the grant, and the lease). Checked again just before answering.
   */
  stillHeld?: () => boolean;
  /**
   * Under a coordinator: the revision a watcher last shown changes under `shownEpoch` rewinds to
   * (changes replies carry it as `since`): where its current epoch began, or an earlier epoch of
   * the location's lineage after `shownEpoch` (ownership.ts `sinceFor`).
   */
  epochSince?: (shownEpoch: number | undefined) => number | undefined;
  /** The location's handles, made on first use (a batch uses one for all its items). */
  streamHandle?: StreamHandle;
  kvHandle?: KvHandle;
  /** The server's metrics (absent: none recorded), and when the request arrived (performance.now) for the ack latency. */
  metrics?: ServerMetrics | undefined;
  arrivedMs?: number;
}

type Compute = (ctx: RequestContext, body: WireMap) => unknown;

interface OpSpec {
  cls: SubjectClass | "any";
  fields: readonly string[];
  /** Replies by itself (streams, uploads, credit); else the result of `compute` is sent. */
  run?: (ctx: RequestContext, body: WireMap) => Promise<void> | void;
  compute?: Compute;
}

const stream = (ctx: RequestContext) => (ctx.streamHandle ??= ctx.store.stream(ctx.location));
const kv = (ctx: RequestContext) => (ctx.kvHandle ??= ctx.store.kv(ctx.location));

const OPS: Record<string, OpSpec> = {
  "stream.append": { cls: "w", fields: ["message", "options"], compute: (c, b) => stream(c).append(b.message as never, b.options as never) },
  "stream.appendMany": { cls: "w", fields: ["items"], compute: (c, b) => stream(c).appendMany(b.items as never) },
  "stream.set": { cls: "w", fields: ["seq", "message", "options"], compute: (c, b) => stream(c).set(b.seq as never, b.message as never, b.options as never) },
  "stream.setMany": { cls: "w", fields: ["items"], compute: (c, b) => stream(c).setMany(b.items as never) },
  "stream.delete": { cls: "w", fields: ["seq", "options"], compute: (c, b) => stream(c).delete(b.seq as never, b.options as never) },
  "stream.deleteAll": { cls: "w", fields: ["options"], compute: (c, b) => stream(c).deleteAll(b.options as never) },
  "kv.set": { cls: "w", fields: ["key", "value", "options"], compute: (c, b) => kv(c).set(b.key as never, b.value as never, b.options as never) },
  "kv.setMany": { cls: "w", fields: ["items"], compute: (c, b) => kv(c).setMany(b.items as never) },
  "kv.delete": { cls: "w", fields: ["key", "options"], compute: (c, b) => kv(c).delete(b.key as never, b.options as never) },
  // Per-location limits are a write: only who may write the location may change them (wire/config-wire.ts).
  "stream.config": { cls: "w", fields: ["limits", "options"], compute: (c, b) => stream(c).config(configLimitsUntrusted(b.limits) as never, b.options as never) },
  "kv.config": { cls: "w", fields: ["limits", "options"], compute: (c, b) => kv(c).config(configLimitsUntrusted(b.limits) as never, b.options as never) },
  upload: { cls: "w", fields: ["head", "bytes"], run: (c, b) => c.uploads.start(c, b, (head, value) => heldAfter(c, runUpload(c, head, value))) },
  chunk: { cls: "w", fields: ["upload", "k", "data", "cancel"], run: (c, b) => c.uploads.chunk(c.location, c.cls, b, c.reply) },
  ping: { cls: "any", fields: [], compute: () => ({}) },
  credit: { cls: "any", fields: ["stream", "n", "cancel"], run: credit },
  batch: { cls: "any", fields: ["items"], run: batch },
  // A large value is left unread here and streamed from disk into the reply (server-replies.ts).
  "stream.get": { cls: "r", fields: ["seq"], compute: async (c, b) => (await stream(c).getLazy(b.seq as never)) ?? null },
  "kv.get": { cls: "r", fields: ["key"], compute: async (c, b) => (await kv(c).getLazy(b.key as never)) ?? null },
  inventory: { cls: "r", fields: [], compute: (c) => c.store.inventory(c.location) },
  changes: { cls: "r", fields: ["after", "limit", "shownEpoch"], compute: changes },
  "stream.getAll": { cls: "r", fields: ["startSeq"], run: (c, b) => streamed(c, () => scanStream(c.store, c.location, b.startSeq)) },
  "kv.getAll": { cls: "r", fields: ["key"], run: (c, b) => streamed(c, () => scanKv(c.store, c.location, b.key)) },
  "kv.keys": { cls: "r", fields: [], run: (c) => streamed(c, () => kv(c).keys()) },
};

/** Ops whose value may arrive as an upload, and how the streamed value is handed to the store. */
const VALUE_OPS: Record<string, { fields: readonly string[]; write: (c: RequestContext, b: WireMap, value: AsyncIterable<Uint8Array>) => Promise<unknown> }> = {
  "stream.append": { fields: ["message", "options"], write: (c, b, v) => stream(c).appendFrom(v, (b.message ?? {}) as never, b.options as never) },
  "stream.set": { fields: ["seq", "message", "options"], write: (c, b, v) => stream(c).setFrom(b.seq as never, v, (b.message ?? {}) as never, b.options as never) },
  "kv.set": { fields: ["key", "options"], write: (c, b, v) => kv(c).setFrom(b.key as never, v, b.options as never) },
};

/** Handles one decoded request: checks op, class and fields, then runs it and replies. */
export async function handle(ctx: RequestContext, body: WireMap): Promise<void> {
  const spec = lookup(ctx, body);
  if (spec.run) return spec.run(ctx, body);
  // Room for a read's reply is reserved before the read (server-reads.ts). Writes go on without
  // an await, so requests of one connection reach the commit queue in the order they arrived.
  const holding = holdForRead(ctx, body);
  const hold = holding === undefined ? undefined : await holding;
  try {
    const result = await spec.compute!(ctx, body);
    checkStillHeld(ctx);
    await ctx.replies.result(ctx, result);
    if (ctx.metrics !== undefined && spec.cls === "w") ctx.metrics.ack(ackOf(body), (performance.now() - ctx.arrivedMs!) / 1000);
  } finally {
    hold?.release();
  }
}

function lookup(ctx: RequestContext, body: WireMap): OpSpec {
  const op = body.op;
  if (typeof op !== "string") throw new StrataError("INVALID_ARGUMENT", 'the request has no "op" string field');
  const spec = Object.hasOwn(OPS, op) ? OPS[op] : undefined;
  if (!spec) throw new StrataError("INVALID_ARGUMENT", `unknown op "${op.slice(0, 40)}"; see src/net/server/server-handlers.ts for the ops`);
  if (spec.cls !== "any" && spec.cls !== ctx.cls) {
    throw new StrataError("FORBIDDEN", `op "${op}" is a ${spec.cls === "w" ? "write" : "read"} and must be sent on the ${spec.cls === "w" ? "write (P.w…)" : "read (P.r…)"} subject`);
  }
  checkFields(ctx, body, spec.fields, op);
  return spec;
}

/** Rejects fields an op does not know, and a body location that disagrees with the subject. */
export function checkFields(ctx: { location: string }, body: WireMap, fields: readonly string[], op: string): void {
  for (const name in body) {
    const value = body[name];
    if (name === "op" || fields.includes(name) || value === undefined) continue;
    if (name === "location") {
      // Check the type before using the value: a decoded map may carry any keys (toString, …).
      if (typeof value !== "string") throw new StrataError("INVALID_LOCATION", "location in the body must be a string (the subject names the location)");
      if (value !== ctx.location) {
        throw new StrataError("FORBIDDEN", `the body names location ${JSON.stringify(value.slice(0, 300))} but the subject names "${ctx.location}"; the subject decides`);
      }
      continue;
    }
    throw new StrataError("INVALID_ARGUMENT", `unknown field "${name.slice(0, 40)}" for op "${op}"; allowed: ${fields.join(", ") || "none"}`);
  }
}

async function heldAfter<T>(ctx: RequestContext, work: Promise<T>): Promise<T> {
  const result = await work;
  checkStillHeld(ctx);
  return result;
}

async function runUpload(ctx: RequestContext, head: WireMap, value: AsyncIterable<Uint8Array> | undefined): Promise<unknown> {
  const op = head.op;
  if (typeof op !== "string" || op === "upload" || op === "chunk" || op === "credit" || !Object.hasOwn(OPS, op) || OPS[op]!.cls !== "w") {
    throw new StrataError("INVALID_ARGUMENT", `an upload must carry a write request, got op ${describeValue(op)}`);
  }
  if (value === undefined) {
    checkFields(ctx, head, OPS[op]!.fields, op);
    return OPS[op]!.compute!(ctx, head);
  }
  const spec = Object.hasOwn(VALUE_OPS, op) ? VALUE_OPS[op] : undefined;
  if (!spec) throw new StrataError("INVALID_ARGUMENT", `op "${op}" takes no streamed value; only stream.append, stream.set and kv.set do`);
  checkFields(ctx, head, spec.fields, op);
  if (head.message !== undefined && !isPlainMap(head.message)) throw new StrataError("INVALID_ARGUMENT", "message must be a map { headers?, timestamp? }");
  const result = await spec.write(ctx, head, value);
  // The ack latency of a chunked write: from its upload request's arrival to the stored value.
  if (ctx.metrics !== undefined) ctx.metrics.ack(ackOf(head), (performance.now() - ctx.arrivedMs!) / 1000);
  return result;
}

/**
 * A coalesced batch: every item is checked to be an encoded request before any runs (a malformed
 * batch writes nothing); then each starts in order, without waiting for the one before, so the
 * writes share group commits as concurrent requests would, and each gets its own result or error.
 */
async function batch(ctx: RequestContext, body: WireMap): Promise<void> {
  const items = body.items;
  const max = ctx.store.limits.manyItemsMax;
  if (!Array.isArray(items) || items.length === 0 || items.length > max) {
    throw new StrataError("INVALID_ARGUMENT", `batch needs items: an array of 1..${max} encoded requests (manyItemsMax)`);
  }
  for (const item of items) {
    if (!(item instanceof Uint8Array)) throw new StrataError("INVALID_ARGUMENT", "every item of a batch must be an encoded request (CBOR byte string)");
  }
  const reads = new BatchReads(ctx);
  // The ack level of each write item, for the ack latency (only with metrics).
  const acks: unknown[] | undefined = ctx.metrics === undefined || ctx.cls !== "w" ? undefined : [];
  const runs = (items as Uint8Array[]).map((bytes, i) => {
    try {
      const request = decodeMap(bytes, "a batch item");
      if (acks !== undefined) acks[i] = ackOf(request) ?? "local";
      if (!COALESCED_OPS.has(request.op as string)) {
        throw new StrataError("INVALID_ARGUMENT", `op ${describeValue(request.op)} cannot be batched; only ${[...COALESCED_OPS].join(", ")}`);
      }
      const spec = lookup(ctx, request);
      // Gets are read in turn within the batch's reply budget; writes start at once.
      return spec.cls === "r" ? reads.read(request, () => spec.compute!(ctx, request)) : Promise.resolve(spec.compute!(ctx, request));
    } catch (err) {
      return Promise.reject(err);
    }
  });
  const results: Array<ItemResult<unknown> & { alone?: true }> = await settleAll(runs);
  for (let i = 0; i < results.length; i++) {
    const r = results[i]!;
    // A large value is streamed only in a reply of its own, and a batch carries at most
    // batchReplyBytesMax of values: the client sends such a get again alone.
    if (r.ok && (isLargeRead(r.result) || r.result === ASK_ALONE)) {
      results[i] = { ok: false, error: { code: "TOO_LARGE", message: "the value is too large for a batch reply; ask for it alone" }, alone: true };
    }
  }
  try {
    checkStillHeld(ctx);
    await ctx.replies.result(ctx, results);
    const m = ctx.metrics;
    if (m !== undefined) {
      // Each item counts as a request alone would: an acknowledged write by its ack level, a
      // refused item by its error code (a get sent back to be asked alone is neither).
      const seconds = (performance.now() - ctx.arrivedMs!) / 1000;
      for (let i = 0; i < results.length; i++) {
        const r = results[i]!;
        if (!r.ok) {
          if (r.alone !== true) m.errors.countCode(r.error.code);
        } else if (acks?.[i] !== undefined) m.ack(acks[i], seconds);
      }
    }
  } finally {
    reads.release();
  }
}

/**
 * The lease or the grant ended while the request ran (a paused process, a move): a write is
 * answered TIMEOUT (it is in this server's log, and may or may not be part of the location's
 * history at its next owner), a read UNAVAILABLE (the client asks the new owner).
 */
export function checkStillHeld(ctx: RequestContext): void {
  if (ctx.stillHeld === undefined || ctx.stillHeld()) return;
  if (ctx.cls === "w") {
    throw new StrataError("TIMEOUT", `server's hold on location "${ctx.location}" ended before the write was acknowledged; it may or may not be applied (retry with the same msgId to apply it exactly once)`);
  }
  throw new StrataError("UNAVAILABLE", `location "${ctx.location}" is no longer served here (it moved, or this server's lease ended); retry`);
}

/**
 * A write request's ack level: its options', or for setMany/appendMany the strongest of its
 * items' ("object" if any item asked for it: the reply waits for every item); undefined means local.
 */
function ackOf(body: WireMap): unknown {
  if (!Array.isArray(body.items)) return isPlainMap(body.options) ? body.options.ack : undefined;
  let ack: unknown;
  for (const item of body.items) {
    const level = isPlainMap(item) && isPlainMap(item.options) ? item.options.ack : undefined;
    if (level === "object") return level;
    ack ??= level;
  }
  return ack;
}

function credit(ctx: RequestContext, body: WireMap): void {
  const { stream: id, n, cancel } = body;
  if (typeof id !== "string") throw new StrataError("INVALID_ARGUMENT", "credit needs stream (string)");
  if (n !== undefined) validateNonNegativeInt(n, "n");
  if (cancel !== undefined && typeof cancel !== "boolean") throw new StrataError("INVALID_ARGUMENT", "cancel must be a boolean");
  ctx.replies.credit(id, ctx.location, ctx.cls, n as number | undefined, cancel === true);
}

async function streamed(ctx: RequestContext, scan: () => Iterable<unknown> | AsyncIterable<unknown>): Promise<void> {
  const base = ctx.store.inventory(ctx.location).revision;
  const reply = await ctx.replies.open(ctx);
  try {
    const budget = ctx.replies.maxPayload() - ctx.limits.frameOverheadBytes;
    const count = await streamBatches(reply, scan(), ctx.limits.batchItemsMax, budget, { base });
    // The epoch the scan was served under: a watcher compares it with later ones (client/watch.ts).
    reply.end(ctx.epoch === undefined ? { base, count } : { base, count, epoch: ctx.epoch });
  } catch (err) {
    reply.fail(err);
  }
}

/**
 * The changes after `after`. Under a coordinator the reply also names the epoch and `since`: the
 * revision its epoch began at, or, for a watcher that says under which epoch it was last shown
 * changes (`shownEpoch`), the lowest start of the epochs after that one along the location's
 * lineage. A watcher shown changes past `since` under an older epoch rewinds to it, since those
 * may not have survived the moves (docs/failover.md, step 3).
 */
async function changes(ctx: RequestContext, body: WireMap): Promise<{ changes: Change[]; next: number; more: boolean; epoch?: number; since?: number }> {
  const shownEpoch = body.shownEpoch === undefined ? undefined : validateNonNegativeInt(body.shownEpoch, "shownEpoch");
  const page = await changesPage(ctx, body);
  const since = ctx.epochSince?.(shownEpoch);
  return ctx.epoch === undefined || since === undefined ? page : { ...page, epoch: ctx.epoch, since };
}

async function changesPage(ctx: RequestContext, body: WireMap): Promise<{ changes: Change[]; next: number; more: boolean }> {
  const after = validateSeqOrZero(body.after, "after");
  const max = ctx.limits.changesPageMax;
  const limit = body.limit === undefined ? max : validateNonNegativeInt(body.limit, "limit");
  if (limit < 1 || limit > max) throw new StrataError("INVALID_ARGUMENT", `limit must be in 1..${max}`);
  const out: Change[] = [];
  let next = after;
  let bytes = 0;
  const page = 64;
  for (;;) {
    const want = Math.min(page, limit - out.length);
    // Reads no further than the reply may carry (plus the one record that crosses it): a client
    // asking for a thousand changes of 1 MiB values costs the server changesReplyBytesMax.
    const got = await ctx.store.changesSince(ctx.location, next, want, ctx.limits.changesReplyBytesMax - bytes);
    for (const change of got) {
      const size = estimateBytes(change);
      if (out.length > 0 && bytes + size > ctx.limits.changesReplyBytesMax) return { changes: out, next, more: true };
      out.push(change);
      bytes += size;
      next = change.revision;
    }
    // Fewer than asked may mean the byte bound stopped the read: only an empty read ends the log.
    if (got.length === 0) return { changes: out, next, more: false };
    if (out.length >= limit) return { changes: out, next, more: true };
  }
}

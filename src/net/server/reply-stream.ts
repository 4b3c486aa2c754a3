/**
 * A streamed reply: an answer that takes many messages (getAll / keys batches, and any frame
 * larger than max_payload, which is sent as parts), and `streamBatches`, which fills batches from a
 * scan. The stream is opened, and its memory reserved, by `Replies` (server-replies.ts).
 *
 * A reply stream never has more than `replyWindowMessages` messages in flight: each batch or part
 * takes one credit and waits for the client's `credit` request when none is left; a client that
 * grants nothing for `replyIdleMs` loses its stream. So a slow or vanished reader costs the server
 * at most a window of messages and one paused scan, never an unbounded queue.
 *
 * Every message of a stream also waits for room in the reply budget (`replyBytesInFlightMax`,
 * reply-budget.ts) before it is published, and goes on the bulk connection, as does the stream's
 * final frame or error, so that they arrive after its messages. A large value, in memory or still
 * on disk, is sent as the tail of its frame as it is, never copied into one.
 */
import { StrataError } from "../../errors.js";
import type { LargeRead } from "../../store.js";
import { sliceChunks, sliceChunksFrom, totalBytes } from "../wire/chunking.js";
import type { Hold } from "./reply-budget.js";
import { isItemRun } from "./store-scan.js";
import { encodeBatch } from "../wire/batch-encode.js";
import type { Replies, ReplyTarget } from "./server-replies.js";
import { byteStringHeader, encode, encodeWithTail, estimateBytes, isPlainMap, type WireMap } from "../wire/wire-codec.js";

export class ReplyStream {
  private sent = 0;
  private credited = 0;
  private waiter: { resolve: () => void; reject: (err: Error) => void; timer: NodeJS.Timeout } | undefined;
  private failure: StrataError | undefined;
  /** True when the client cancelled; nothing more should be sent, not even an error. */
  cancelled = false;
  /** When the stream began to wait for credit, while it waits. */
  starvedSince: number | undefined;

  constructor(
    private readonly replies: Replies,
    readonly target: ReplyTarget,
    readonly id: string,
    /** The standing reservation (Replies.streamHoldBytes), released when the stream closes. */
    readonly hold: Hold,
  ) {}

  private get window(): number {
    return this.replies.limits.replyWindowMessages;
  }

  /** streamBatchBytesMax: items beyond this many bytes go in the next batch. */
  get batchBytesMax(): number {
    return this.replies.limits.streamBatchBytesMax;
  }

  /**
   * Sends a batch: as one message `{ s, w, ...extra, items }` if it fits, else as parts.
   * `itemsBytes`: an upper bound of the items' encoded bytes, when the caller knows one.
   */
  async items(items: unknown[], extra?: WireMap, itemsBytes?: number): Promise<void> {
    const max = this.replies.maxPayload();
    const frame = { ...extra, items };
    const estimate = itemsBytes === undefined ? estimateBytes(frame) : itemsBytes + estimateBytes(extra ?? {});
    if (estimate + this.replies.limits.frameOverheadBytes <= max) {
      const bytes = encodeBatch({ s: this.id, w: this.window, ...extra }, items);
      if (bytes.byteLength <= max) return this.send(bytes);
    }
    // A single large message or entry: its value goes out as it is, never copied into a frame.
    const value = items.length === 1 ? largeValueOf(items[0], 0) : undefined;
    if (value) await this.sendParts(encodeWithTail((tail) => ({ ...extra, items: [withValue(items[0] as WireMap, tail)] }), value));
    else await this.sendParts([encode(frame)]);
  }

  /** Sends one item whose large value is still on disk as a batch of its own, streamed as parts. */
  async largeItem(item: WireMap & { large: LargeRead }, extra?: WireMap): Promise<void> {
    const { large, value: _value, ...rest } = item;
    await this.sendPartsFrom(...framedLarge((tail) => ({ ...extra, items: [{ ...rest, value: tail }] }), large));
  }

  /** Sends an encoded frame (the concatenation of `frame`) as parts, each taking a credit. */
  async sendParts(frame: Uint8Array[]): Promise<void> {
    await this.emitParts(totalBytes(frame), sliceChunks(frame, this.replies.partBytes()));
  }

  /** Sends a frame of `total` bytes that arrives in pieces as parts, each taking a credit. */
  async sendPartsFrom(total: number, pieces: AsyncIterable<Uint8Array>): Promise<void> {
    await this.emitParts(total, sliceChunksFrom(pieces, this.replies.partBytes()));
  }

  private async emitParts(total: number, chunks: Iterable<Uint8Array> | AsyncIterable<Uint8Array>): Promise<void> {
    let k = 0;
    let sent = 0;
    for await (const data of chunks) {
      sent += data.byteLength;
      const msg: WireMap = { s: this.id, w: this.window, part: k, last: sent >= total, data };
      if (k === 0) msg.of = total;
      await this.send(encode(msg));
      k += 1;
    }
    if (sent !== total) throw new StrataError("INTERNAL", `a reply of ${total} bytes ended after ${sent}`);
  }

  /** Publishes one message of the stream: takes a credit, then waits for room in the reply budget. */
  private async send(bytes: Uint8Array): Promise<void> {
    await this.take();
    const room = await this.replies.budget.reserve(bytes.byteLength);
    try {
      if (this.failure) throw this.failure;
      this.replies.publish(this.target.reply, bytes, true);
    } finally {
      room.release();
    }
  }

  /** Ends the stream with a final frame; it takes no credit. */
  end(info: unknown): void {
    this.close();
    if (!this.failure) this.replies.publish(this.target.reply, encode({ s: this.id, w: this.window, end: info ?? null }), true);
  }

  fail(err: unknown): void {
    this.close();
    if (!this.cancelled) this.replies.error(this.target.reply, err, true);
  }

  close(): void {
    this.replies.forget(this);
  }

  grant(consumed: number): void {
    if (consumed > this.credited) this.credited = Math.min(consumed, this.sent);
    if (this.waiter && this.sent < this.credited + this.window) {
      const w = this.waiter;
      this.waiter = undefined;
      this.starvedSince = undefined;
      clearTimeout(w.timer);
      w.resolve();
    }
  }

  abort(err: StrataError, reply: boolean): void {
    this.failure ??= err;
    if (!reply) this.cancelled = true;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      this.starvedSince = undefined;
      clearTimeout(w.timer);
      w.reject(err);
    }
  }

  private take(): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    if (this.sent < this.credited + this.window) {
      this.count();
      return Promise.resolve();
    }
    this.starvedSince = Date.now();
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        this.starvedSince = undefined;
        this.failure = new StrataError("TIMEOUT", `the client granted no credit for ${this.replies.limits.replyIdleMs} ms; the streamed reply was abandoned`);
        reject(this.failure);
      }, this.replies.limits.replyIdleMs);
      this.waiter = {
        resolve: () => {
          this.count();
          resolve();
        },
        reject,
        timer,
      };
    });
  }

  private count(): void {
    this.sent += 1;
    const inFlight = this.sent - this.credited;
    if (inFlight > this.replies.replyInFlightHighWater) this.replies.replyInFlightHighWater = inFlight;
  }
}

/**
 * Streams items as batches: each batch holds at most `batchItemsMax` items and is filled up to
 * `streamBatchBytesMax` (and one message); an item larger than a message goes alone, as parts.
 * `source` yields items, or runs of items with their sizes (store-scan.ts ItemRun). Returns the
 * item count.
 */
export async function streamBatches(
  stream: ReplyStream,
  source: Iterable<unknown> | AsyncIterable<unknown>,
  batchItemsMax: number,
  budgetBytes: number,
  extra?: WireMap,
): Promise<number> {
  budgetBytes = Math.min(budgetBytes, stream.batchBytesMax);
  let batch: unknown[] = [];
  let bytes = 16;
  let count = 0;
  const add = async (item: unknown, size: number) => {
    if (isLargeRead(item)) {
      if (batch.length > 0) await stream.items(batch, extra, bytes);
      batch = [];
      bytes = 16;
      await stream.largeItem(item as WireMap & { large: LargeRead }, extra);
      count += 1;
      return;
    }
    if (batch.length > 0 && (bytes + size > budgetBytes || batch.length >= batchItemsMax)) {
      await stream.items(batch, extra, bytes);
      batch = [];
      bytes = 16;
    }
    batch.push(item);
    bytes += size;
    count += 1;
  };
  for await (const next of source) {
    if (!isItemRun(next)) {
      await add(next, isLargeRead(next) ? 0 : estimateBytes(next));
      continue;
    }
    const { run, bytes: sizes } = next;
    for (let i = 0; i < run.length; i++) {
      const item = run[i];
      // Most items join the batch at once; only a full batch or a large value waits (for credit).
      if (batch.length > 0 && batch.length < batchItemsMax && bytes + sizes[i]! <= budgetBytes && !isLargeRead(item)) {
        batch.push(item);
        bytes += sizes[i]!;
        count += 1;
      } else {
        await add(item, sizes[i]!);
      }
    }
  }
  if (batch.length > 0) await stream.items(batch, extra, bytes);
  return count;
}

export function isLargeRead(result: unknown): result is { large: LargeRead } {
  return result !== null && typeof result === "object" && (result as { large?: unknown }).large !== undefined;
}

/**
 * A frame whose last field is a large value still on disk: its size in bytes, and its bytes as
 * they are read (the frame's head, the value's byte-string header, then the value's pieces).
 */
export function framedLarge(build: (tail: Uint8Array) => unknown, large: LargeRead): [number, AsyncIterable<Uint8Array>] {
  const [head] = encodeWithTail(build, new Uint8Array(0));
  const header = byteStringHeader(large.size);
  return [head!.byteLength + header.byteLength + large.size, withPrefix([head!, header], large.pieces())];
}

async function* withPrefix(prefix: Uint8Array[], rest: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  yield* prefix;
  yield* rest;
}

/** The value of a message or kv entry, if `item` is one with a value of more than `minBytes`. */
export function largeValueOf(item: unknown, minBytes: number): Uint8Array | undefined {
  if (!isPlainMap(item) || !(item.value instanceof Uint8Array)) return undefined;
  return item.value.byteLength > minBytes ? item.value : undefined;
}

/** `item` with its value replaced, and moved to the last field (see encodeWithTail). */
export function withValue(item: WireMap, value: Uint8Array): WireMap {
  const { value: _old, ...rest } = item;
  return { ...rest, value };
}

/**
 * How the server answers: one-message results and error replies, which connection each goes on,
 * and the reply streams in progress (reply-stream.ts sends one; this file opens them, routes their
 * `credit` requests, and bounds how many there are and what they hold).
 *
 * Memory in total, not only per stream, is bounded by the reply budget (reply-budget.ts): every
 * message of a stream waits for room in `replyBytesInFlightMax` before it is published (bytes
 * nats-server has not taken yet count against it), and each open stream holds a standing
 * reservation for what it may keep while paused (the message it is filling, the item it carries
 * over, the chunk it is slicing). When the streams' half of the budget is full, a stream that has
 * waited for credit longer than `replyBudgetWaitMs` is abandoned to make room for a new one: a
 * reader who never grants credit cannot keep others from streaming.
 */
import { Empty, nuid, type NatsConnection } from "nats";
import { StrataError } from "../../errors.js";
import type { Logger } from "../../logger.js";
import type { LargeRead } from "../../store.js";
import { chunkDataBytes } from "../wire/chunking.js";
import type { NetLimits } from "../wire/net-limits.js";
import { OutboundMeter } from "./outbound-meter.js";
import { ReplyBudget, SMALL_REPLY_BYTES } from "./reply-budget.js";
import { framedLarge, isLargeRead, largeValueOf, ReplyStream, withValue } from "./reply-stream.js";
import type { SubjectClass } from "../wire/subjects.js";
import { encode, encodeWithTail, type WireMap } from "../wire/wire-codec.js";
import { errorHeaders } from "../wire/wire-errors.js";

export interface ReplyTarget {
  reply: string;
  location: string;
  cls: SubjectClass;
  /** The epoch the location is served under (docs/failover.md); results carry it as `e`. */
  epoch?: number;
}

export interface ReplyStats {
  /** Most messages any one reply stream had sent beyond the client's credit at once. */
  replyInFlightHighWater: number;
  replyStreamsOpen: number;
  /** Reply streams abandoned because they waited for credit while others needed their room. */
  replyStreamsEvicted: number;
  /** Bytes reserved by replies being built, and published bytes nats-server has not taken yet. */
  replyBytesHeld: number;
  replyBytesPending: number;
  /** Most of both at once, and how many replies found no room in time (answered UNAVAILABLE). */
  replyBytesHighWater: number;
  replyBudgetRefused: number;
}

export class Replies {
  private readonly streams = new Map<string, ReplyStream>();
  readonly budget: ReplyBudget;
  /**
   * Readers (reply subject minus its last token) that were sent a bulk reply lately, until when:
   * all their replies, errors too, go on the bulk connection. nats-server stalls whichever
   * connection publishes to a reader who has stopped reading, so a reader who asks for large
   * replies must not be sent anything on the main connection either.
   */
  private readonly bulkReaders = new Map<string, number>();
  replyInFlightHighWater = 0;
  private evicted = 0;
  /** Called after each reply published on the main connection (the server sends waiting changes with it). */
  onPublished: (() => void) | undefined;

  /**
   * @param carryBytesMax most bytes a paused scan may keep besides the message it fills: one
   *   record read ahead and the read buffer it shares (recordBytesMax + scanReadBytesMax)
   * @param bulk the connection for large replies and reply streams (reply-budget.ts says why);
   *   the main connection `nc` when the server has only one
   */
  constructor(
    private readonly nc: NatsConnection,
    readonly limits: NetLimits,
    private readonly logger: Logger,
    private readonly carryBytesMax: number,
    private readonly bulk: NatsConnection = nc,
  ) {
    // Fewer pending bytes than this wait a little for their flush (outbound-meter.ts): a small
    // share of the small replies' pool (an eighth of the budget), so the over-count never matters.
    const eager = Math.min(limits.replyFlushEagerBytesMax, Math.floor(limits.replyBytesInFlightMax / 64));
    const main = new OutboundMeter(nc, () => this.budget.wake(), eager, limits.replyFlushDelayMs);
    const bulkMeter = bulk === nc ? main : new OutboundMeter(bulk, () => this.budget.wake(), eager, limits.replyFlushDelayMs);
    this.budget = new ReplyBudget(limits.replyBytesInFlightMax, limits.replyBudgetWaitMs, main, bulkMeter);
  }

  /** What a reply stream reserves for as long as it is open (see the file comment). */
  streamHoldBytes(): number {
    return this.maxPayload() + this.carryBytesMax;
  }

  maxPayload(): number {
    return this.nc.info?.max_payload ?? 1024 * 1024;
  }

  partBytes(): number {
    return chunkDataBytes(this.maxPayload(), this.limits.frameOverheadBytes, this.limits.maxPayloadMinBytes);
  }

  /** Whether replies to `reply` go on the bulk connection whatever their size (see bulkReaders). */
  isBulkReader(reply: string): boolean {
    const key = readerOf(reply);
    const until = this.bulkReaders.get(key);
    if (until === undefined) return false;
    if (until >= Date.now()) return true;
    this.bulkReaders.delete(key);
    return false;
  }

  private markBulkReader(reply: string): void {
    const key = readerOf(reply);
    this.bulkReaders.delete(key);
    this.bulkReaders.set(key, Date.now() + this.limits.replyIdleMs);
    if (this.bulkReaders.size > BULK_READERS_MAX) this.bulkReaders.delete(this.bulkReaders.keys().next().value!);
  }

  /** Publishes a reply: on the bulk connection when asked to, when it is larger than a small reply, or for a bulk reader. */
  publish(subject: string, data: Uint8Array, bulkWanted = data.byteLength > SMALL_REPLY_BYTES): void {
    const bulk = (bulkWanted || this.isBulkReader(subject)) && this.bulk !== this.nc;
    if (bulk) this.markBulkReader(subject);
    try {
      (bulk ? this.bulk : this.nc).publish(subject, data);
      (bulk ? this.budget.bulk : this.budget.main).add(data.byteLength);
    } catch (err) {
      this.logger.warn({ event: "reply_publish_failed", subject, error: (err as Error).message }, `could not publish a reply to ${subject}: ${(err as Error).message}`);
    }
    if (!bulk) this.onPublished?.();
  }

  /** Publishes an error reply; `bulk` for a reply stream's, which must follow its messages. */
  error(reply: string, err: unknown, bulkWanted = false): void {
    const bulk = (bulkWanted || this.isBulkReader(reply)) && this.bulk !== this.nc;
    try {
      (bulk ? this.bulk : this.nc).publish(reply, Empty, { headers: errorHeaders(err) });
      (bulk ? this.budget.bulk : this.budget.main).add(0);
    } catch (e) {
      this.logger.warn({ event: "reply_publish_failed", subject: reply, error: (e as Error).message }, `could not publish an error reply to ${reply}: ${(e as Error).message}`);
    }
  }

  /** Sends the final result of a request: one message, or parts through a reply stream. */
  async result(target: ReplyTarget, result: unknown): Promise<void> {
    const large = largeReadOf(result);
    if (large) return this.streamLarge(target, result as WireMap, large);
    const value = largeValueOf(result, this.maxPayload() - this.limits.frameOverheadBytes);
    let parts: Uint8Array[];
    if (value) {
      parts = encodeWithTail((tail) => withEpoch({ ok: withValue(result as WireMap, tail) }, target), value);
    } else {
      const bytes = encode(withEpoch({ ok: result ?? null }, target));
      if (bytes.byteLength <= this.maxPayload()) return this.publish(target.reply, bytes);
      parts = [bytes];
    }
    const stream = await this.open(target);
    try {
      await stream.sendParts(parts);
    } finally {
      stream.close();
    }
  }

  /**
   * A result whose large value is still on disk (a get of a chunked value): the value is read
   * chunk record by chunk record into reply parts, so the server holds about one chunk and the
   * reply window, never the whole value.
   */
  private async streamLarge(target: ReplyTarget, result: WireMap, large: LargeRead): Promise<void> {
    const { large: _large, value: _value, ...rest } = result;
    const stream = await this.open(target);
    try {
      await stream.sendPartsFrom(...framedLarge((tail) => withEpoch({ ok: { ...rest, value: tail } }, target), large));
    } finally {
      stream.close();
    }
  }

  /** Opens a reply stream once its standing reservation is granted (UNAVAILABLE if none in time). */
  async open(target: ReplyTarget): Promise<ReplyStream> {
    const full = () => new StrataError("UNAVAILABLE", `the server has ${this.streams.size} streamed replies in progress (replyStreamsMax); retry shortly`);
    if (this.streams.size >= this.limits.replyStreamsMax && !this.evictStarved()) throw full();
    const bytes = this.streamHoldBytes();
    if (!this.budget.fits(bytes, "stream")) this.evictStarved();
    const hold = await this.budget.reserve(bytes, "stream");
    if (this.streams.size >= this.limits.replyStreamsMax) {
      hold.release();
      throw full();
    }
    const stream = new ReplyStream(this, target, nuid.next(), hold);
    this.streams.set(stream.id, stream);
    return stream;
  }

  /**
   * Abandons the stream that has waited longest for credit, if that is longer than
   * `replyBudgetWaitMs` (what any reply waits for room): its reader is slow or gone, and another
   * reader needs the room. Returns whether one was abandoned.
   */
  private evictStarved(): boolean {
    const now = Date.now();
    let oldest: ReplyStream | undefined;
    for (const stream of this.streams.values()) {
      const since = stream.starvedSince;
      if (since !== undefined && now - since > this.limits.replyBudgetWaitMs && (oldest === undefined || since < oldest.starvedSince!)) oldest = stream;
    }
    if (oldest === undefined) return false;
    this.evicted += 1;
    oldest.abort(new StrataError("TIMEOUT", `the client granted no credit for ${now - oldest.starvedSince!} ms while the server needed the room for other readers; the streamed reply was abandoned`), true);
    // The stream's hold is released when its sender sees the abort (a turn later); free it now.
    this.forget(oldest);
    return true;
  }

  /** A `credit` request: the client consumed `n` messages of stream `id`, or cancels it. */
  credit(id: string, location: string, cls: SubjectClass, n: number | undefined, cancel: boolean): void {
    const stream = this.streams.get(id);
    if (!stream || stream.target.location !== location || stream.target.cls !== cls) {
      throw new StrataError("INVALID_ARGUMENT", `no streamed reply "${String(id).slice(0, 40)}" in progress for this location (it ended or timed out)`);
    }
    if (cancel) stream.abort(new StrataError("CLOSED", "the client cancelled the streamed reply"), false);
    else if (n !== undefined) stream.grant(n);
  }

  /** @internal */
  forget(stream: ReplyStream): void {
    this.streams.delete(stream.id);
    stream.hold.release();
  }

  /** Ends every stream in progress and every wait for room (server shutdown). */
  abortAll(err: StrataError): void {
    for (const stream of [...this.streams.values()]) stream.abort(err, true);
    this.budget.abortAll(err);
  }

  stop(): void {
    this.budget.main.stop();
    this.budget.bulk.stop();
  }

  stats(): ReplyStats {
    return { replyInFlightHighWater: this.replyInFlightHighWater, replyStreamsOpen: this.streams.size, replyStreamsEvicted: this.evicted, ...this.budget.stats() };
  }
}

/** Most readers remembered in `bulkReaders` (the oldest is forgotten first). */
const BULK_READERS_MAX = 10_000;

/** The reader a reply subject belongs to: its inbox, without the request's own last token. */
function readerOf(reply: string): string {
  const dot = reply.lastIndexOf(".");
  return dot > 0 ? reply.slice(0, dot) : reply;
}

/** The unread large value of a get's result, if it has one. */
function largeReadOf(result: unknown): LargeRead | undefined {
  return isLargeRead(result) ? result.large : undefined;
}

/**
 * A result frame with the epoch it was served under, when the server runs under a coordinator.
 * The epoch goes first: a large value must stay the frame's last item (encodeWithTail).
 */
function withEpoch(frame: WireMap, target: ReplyTarget): WireMap {
  return target.epoch === undefined ? frame : { e: target.epoch, ...frame };
}

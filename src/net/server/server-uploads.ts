/**
 * Uploads: requests larger than one message, received chunk by chunk.
 *
 * The client announces `{ op: "upload", head: H, bytes: V }` and then sends the byte sequence
 * `head ++ value` as `{ op: "chunk", upload, k, data }` messages on the same write subject. The
 * head (H bytes) is an ordinary request map without its value; it is buffered (bounded by
 * uploadHeadBytesMax, or batchBytesMax for appendMany/setMany whose whole request is the head),
 * decoded and dispatched. The V value bytes are never gathered: they feed an async iterable that
 * `appendFrom` / `setFrom` consume, which writes chunk records as they fill and makes the value
 * visible only when the last byte is in.
 *
 * Flow control: the server grants chunks (`{ up, grant: n }` = chunks 0..n-1 may be sent) as the
 * writer consumes them, never more than a window ahead, so an upload holds at most `window` chunks
 * in memory whatever the value's size. A chunk beyond the grant, out of order, past the declared
 * size, or silence for `uploadIdleMs` fails the upload; the engine then leaves nothing visible.
 * A sender whose source failed (an HTTP body cut off at the gateway) says so with
 * `{ op: "chunk", upload, cancel: true }`: the upload fails at once and its slot is free, instead
 * of after `uploadIdleMs` (all of the gateway's users share one client's `uploadsPerClientMax`).
 *
 * Slots: at most `uploadsMax` uploads at once, and at most `uploadsPerClientMax` of one client
 * (the first token of its reply inbox, wire/subjects.ts `replyClient`). A chunk renews the idle timer,
 * so idleness alone would let a client that sends a byte every few seconds hold a slot forever:
 * an upload must also keep an average of `uploadBytesPerSecMin` once its first `uploadIdleMs` are
 * over, which bounds its total time to `uploadIdleMs + bytes / uploadBytesPerSecMin`. The chunk
 * records a failed upload already wrote are marked dead by the engine (large-value.ts).
 */
import { nuid } from "nats";
import { StrataError } from "../../errors.js";
import { windowChunks } from "../wire/chunking.js";
import type { NetLimits } from "../wire/net-limits.js";
import type { Replies, ReplyTarget } from "./server-replies.js";
import type { SubjectClass } from "../wire/subjects.js";
import { decodeMap, encode, type WireMap } from "../wire/wire-codec.js";

export type UploadRunner = (head: WireMap, value: AsyncIterable<Uint8Array> | undefined) => Promise<unknown>;

export interface UploadStats {
  uploadsOpen: number;
  /** Value bytes received but not yet consumed by the writer, summed over uploads, now and at most. */
  uploadBufferedBytes: number;
  uploadBufferedHighWater: number;
}

export class Uploads {
  private readonly sessions = new Map<string, UploadSession>();
  /** Uploads in progress per client; an entry exists only while its count is above zero. */
  private readonly perClient = new Map<string, number>();
  headBytesTotal = 0;
  bufferedBytes = 0;
  bufferedHighWater = 0;

  constructor(
    readonly replies: Replies,
    readonly limits: NetLimits,
    private readonly valueBytesMax: number,
  ) {}

  /** Starts an upload; resolves when it has finished (replied) one way or the other. */
  start(target: ReplyTarget & { client: string }, body: WireMap, run: UploadRunner): Promise<void> {
    const head = body.head;
    const bytes = body.bytes;
    if (typeof head !== "number" || !Number.isSafeInteger(head) || head < 1 || typeof bytes !== "number" || !Number.isSafeInteger(bytes) || bytes < 0) {
      throw new StrataError("INVALID_ARGUMENT", "upload needs integer fields head >= 1 (request bytes) and bytes >= 0 (value bytes)");
    }
    if (bytes > this.valueBytesMax) {
      throw new StrataError("TOO_LARGE", `the value is ${bytes} bytes; the limit valueBytesMax is ${this.valueBytesMax}`);
    }
    const headMax = bytes > 0 ? this.limits.uploadHeadBytesMax : this.limits.batchBytesMax;
    if (head > headMax) {
      throw new StrataError("TOO_LARGE", `the request is ${head} bytes without its value; at most ${headMax} are accepted (${bytes > 0 ? "uploadHeadBytesMax" : "batchBytesMax"})`);
    }
    if (this.sessions.size >= this.limits.uploadsMax || this.headBytesTotal + head > this.limits.uploadHeadBytesTotalMax) {
      throw new StrataError("UNAVAILABLE", `the server has ${this.sessions.size} uploads in progress; retry shortly`);
    }
    const mine = this.perClient.get(target.client) ?? 0;
    if (mine >= this.limits.uploadsPerClientMax) {
      throw new StrataError("UNAVAILABLE", `this client already has ${mine} uploads in progress (uploadsPerClientMax); retry when one has finished`);
    }
    const chunkBytes = this.replies.partBytes();
    const window = windowChunks(this.limits.uploadWindowBytes, chunkBytes, this.limits.uploadWindowChunksMin, this.limits.uploadWindowChunksMax);
    const session = new UploadSession(this, target, nuid.next(), head, bytes, window, run);
    this.sessions.set(session.id, session);
    this.perClient.set(target.client, mine + 1);
    this.headBytesTotal += head;
    session.begin();
    return session.done;
  }

  chunk(location: string, cls: SubjectClass, body: WireMap, reply: string): void {
    const { upload, k, data, cancel } = body;
    const cancelling = cancel === true && k === undefined && data === undefined;
    if (typeof upload !== "string" || (!cancelling && (typeof k !== "number" || !Number.isSafeInteger(k) || k < 0 || !(data instanceof Uint8Array) || data.byteLength === 0))) {
      throw new StrataError("INVALID_ARGUMENT", "chunk needs upload (string), and k (integer >= 0) and data (non-empty bytes), or cancel: true alone");
    }
    const session = this.sessions.get(upload);
    if (!session || session.target.location !== location || cls !== "w") {
      throw new StrataError("INVALID_ARGUMENT", `no upload "${upload.slice(0, 40)}" in progress for this location (it finished, failed or timed out)`);
    }
    if (reply !== session.target.reply) {
      throw new StrataError("INVALID_ARGUMENT", "chunks of an upload must use the reply subject of the upload request");
    }
    if (cancelling) session.fail(new StrataError("CLOSED", "the upload was cancelled by its sender (its source failed); nothing was written"));
    else session.push(k as number, data as Uint8Array);
  }

  /** @internal */
  forget(session: UploadSession): void {
    if (!this.sessions.delete(session.id)) return;
    this.headBytesTotal -= session.headBytes;
    const left = (this.perClient.get(session.target.client) ?? 0) - 1;
    if (left > 0) this.perClient.set(session.target.client, left);
    else this.perClient.delete(session.target.client);
  }

  /** @internal */
  buffered(delta: number): void {
    this.bufferedBytes += delta;
    if (this.bufferedBytes > this.bufferedHighWater) this.bufferedHighWater = this.bufferedBytes;
  }

  abortAll(err: StrataError): void {
    for (const session of [...this.sessions.values()]) session.fail(err);
  }

  stats(): UploadStats {
    return { uploadsOpen: this.sessions.size, uploadBufferedBytes: this.bufferedBytes, uploadBufferedHighWater: this.bufferedHighWater };
  }
}

interface Piece {
  data: Uint8Array;
  /** The last piece of its chunk: consuming it frees a window slot. */
  chunkEnd: boolean;
}

class UploadSession {
  private readonly head: Uint8Array;
  private headFilled = 0;
  private readonly queue: Piece[] = [];
  private valueReceived = 0;
  private nextK = 0;
  private consumed = 0;
  private granted = 0;
  private failure: StrataError | undefined;
  private settled = false;
  private started = false;
  private wake: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly startedAt = performance.now();
  private resolveDone!: () => void;
  readonly done = new Promise<void>((resolve) => (this.resolveDone = resolve));

  constructor(
    private readonly uploads: Uploads,
    readonly target: ReplyTarget & { client: string },
    readonly id: string,
    readonly headBytes: number,
    private readonly valueBytes: number,
    private readonly window: number,
    private readonly run: UploadRunner,
  ) {
    this.head = Buffer.allocUnsafe(headBytes);
  }

  begin(): void {
    this.touch();
    this.grant(true);
  }

  push(k: number, data: Uint8Array): void {
    if (this.failure) return;
    if (k !== this.nextK) return this.fail(new StrataError("INVALID_ARGUMENT", `upload chunk ${k} arrived where chunk ${this.nextK} was expected`));
    if (k >= this.granted) return this.fail(new StrataError("INVALID_ARGUMENT", `upload chunk ${k} was sent beyond the granted window (${this.granted}); flow control violated`));
    if (this.headFilled + this.valueReceived + data.byteLength > this.headBytes + this.valueBytes) {
      return this.fail(new StrataError("INVALID_ARGUMENT", `the upload sent more than the ${this.headBytes + this.valueBytes} bytes it declared`));
    }
    this.nextK += 1;
    this.touch();
    let rest = data;
    if (this.headFilled < this.headBytes) {
      const take = Math.min(rest.byteLength, this.headBytes - this.headFilled);
      this.head.set(rest.subarray(0, take), this.headFilled);
      this.headFilled += take;
      rest = rest.subarray(take);
      if (rest.byteLength === 0) this.consume();
      if (this.headFilled === this.headBytes) this.dispatch();
    }
    if (rest.byteLength > 0) {
      this.valueReceived += rest.byteLength;
      // Copy: `rest` is a view into the buffer nats.js read many messages into, and holding the
      // view would hold all of them; the copy keeps the window's memory what it says it is.
      this.queue.push({ data: Buffer.from(rest), chunkEnd: true });
      this.uploads.buffered(rest.byteLength);
    }
    this.wakeReader();
  }

  fail(err: StrataError): void {
    if (this.failure || this.settled) return;
    this.failure = err;
    this.uploads.replies.error(this.target.reply, err);
    this.wakeReader();
    this.finish();
  }

  private dispatch(): void {
    let head: WireMap;
    try {
      head = decodeMap(this.head, "the upload's request");
    } catch (err) {
      return this.fail(err as StrataError);
    }
    this.started = true;
    if (this.valueBytes === 0) this.stopTimer();
    const value = this.valueBytes > 0 ? this.values() : undefined;
    this.run(head, value).then(
      async (result) => {
        if (this.failure) return;
        this.settled = true;
        this.finish();
        await this.uploads.replies.result(this.target, result);
      },
      (err: unknown) => {
        if (this.failure) return;
        this.fail(err instanceof StrataError ? err : new StrataError("INTERNAL", `upload failed: ${(err as Error)?.message ?? String(err)}`, { cause: err }));
      },
    ).catch(() => undefined).finally(() => this.resolveDone());
  }

  private async *values(): AsyncGenerator<Uint8Array> {
    for (;;) {
      if (this.failure) throw this.failure;
      const piece = this.queue.shift();
      if (piece) {
        this.uploads.buffered(-piece.data.byteLength);
        if (piece.chunkEnd) this.consume();
        this.touch();
        yield piece.data;
        continue;
      }
      if (this.valueReceived === this.valueBytes) {
        // Everything is in; what is left is the commit, which no client silence can affect.
        this.stopTimer();
        return;
      }
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  private consume(): void {
    this.consumed += 1;
    this.grant(false);
  }

  /** Grants chunks up to consumed + window, in steps of half a window to save messages. */
  private grant(first: boolean): void {
    const target = this.consumed + this.window;
    if (!first && target - this.granted < Math.ceil(this.window / 2)) return;
    this.granted = target;
    const msg: WireMap = { up: this.id, grant: target };
    this.uploads.replies.publish(this.target.reply, encode(msg));
  }

  private wakeReader(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  /**
   * (Re)arms the one timer of an upload at whichever comes first: `uploadIdleMs` of silence, or
   * the moment the bytes received so far fall below the minimum average rate.
   */
  private touch(): void {
    if (this.settled || this.failure) return;
    if (this.timer) clearTimeout(this.timer);
    const { uploadIdleMs: idleMs, uploadBytesPerSecMin: rate } = this.uploads.limits;
    const now = performance.now();
    const received = this.headFilled + this.valueReceived;
    const rateDue = this.startedAt + idleMs + (received * 1000) / rate;
    const idleDue = now + idleMs;
    this.timer = setTimeout(() => {
      const why = idleDue <= rateDue
        ? `the upload received no chunk for ${idleMs} ms`
        : `the upload sent ${received} of ${this.headBytes + this.valueBytes} bytes in ${Math.round(performance.now() - this.startedAt)} ms, slower than uploadBytesPerSecMin (${rate} bytes/s)`;
      this.fail(new StrataError("TIMEOUT", `${why} and was abandoned; nothing was written`));
    }, Math.max(0, Math.min(idleDue, rateDue) - now));
  }

  private stopTimer(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private finish(): void {
    this.stopTimer();
    for (const piece of this.queue) this.uploads.buffered(-piece.data.byteLength);
    this.queue.length = 0;
    this.uploads.forget(this);
    // Before the head is dispatched nobody else will resolve `done`.
    if (!this.started) this.resolveDone();
  }
}

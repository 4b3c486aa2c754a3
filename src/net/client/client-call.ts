/**
 * How the client calls a server: finding the server of a location (pinned, or asked of the
 * coordinator and cached), sending a request as one message or as an upload when it exceeds the
 * connection's max_payload, reading replies (reply-reader.ts: reassembling parts, granting credit
 * for streamed replies), and retrying with backoff + jitter within the call's time budget.
 *
 * Epochs (docs/failover.md): every result of a server under a coordinator carries the epoch the
 * location was served under (`e`), and locate answers carry the epoch known to the coordinator.
 * The client keeps the highest epoch seen per location and drops a result from an older one (a
 * server that lost the location): a read is asked again at the current owner, a write reported
 * like a timeout (it may or may not be part of the history; appends with a msgId are retried).
 *
 * Retries: UNAVAILABLE (including no responders) means the request was not handled, so every call
 * is retried after re-locating. TIMEOUT is retried only for calls that are safe to repeat (reads,
 * appends with a msgId), which wait a third of the budget per attempt; other writes report it,
 * with a hint, because they may have been applied. A request in flight at a server that vanished
 * (killed, connection lost) ends early instead of waiting its attempt out: its reply reader checks
 * the server after `serverProbeMs` without a reply (server-probe.ts), reads with UNAVAILABLE,
 * writes with TIMEOUT.
 */
import { backoff, type Backoff } from "../../backoff.js";
import { StrataError } from "../../errors.js";
import { chunkDataBytes, sliceChunks, sliceChunksFrom } from "../wire/chunking.js";
import { Coalescer } from "../wire/client-coalesce.js";
import type { Channel, Transport } from "./client-transport.js";
import { ReplyReader } from "./reply-reader.js";
import { DEFAULT_NET_LIMITS, type ClientLimits } from "../wire/net-limits.js";
import { locateSubject, requestSubject, validateServerId, type SubjectClass } from "../wire/subjects.js";
import { decodeMap, encode, type WireMap } from "../wire/wire-codec.js";
import { errorOfReply, fromNatsError, timeoutError, withCallerStack } from "../wire/wire-errors.js";

export interface CallOptions {
  location: string;
  cls: SubjectClass;
  /** Safe to send again after a TIMEOUT (reads, appends with msgId). */
  idempotent: boolean;
}

/** A request whose value may travel separately: `build(value)` inlines it, `build()` leaves it out. */
export interface ValueRequest {
  build: (value?: Uint8Array) => WireMap;
  value: Uint8Array | StreamedValue;
}

/**
 * A value read from `chunks` while it is sent (always as an upload), `bytes` long in all; memory
 * holds one chunk of it at a time. The request is retried only until its first byte was read: a
 * source cannot be read twice, so a failure after that is reported, not sent again.
 */
export interface StreamedValue {
  bytes: number;
  chunks: AsyncIterable<Uint8Array>;
}

/** Streamed values whose source has started to be read (they cannot be sent again). */
const startedValues = new WeakSet<StreamedValue>();

/** Where a call goes: its subject, how errors name it, whether it writes, and its location. */
export interface Target {
  subject: string;
  what: string;
  write: boolean;
  location: string;
}

const NET = DEFAULT_NET_LIMITS;

export class Caller {
  private readonly servers = new Map<string, string>();
  /** Highest epoch seen per location (bounded like the locate cache). */
  private readonly epochs = new Map<string, number>();
  private readonly coalescer: Coalescer;

  constructor(
    readonly transport: Transport,
    readonly prefix: string,
    readonly limits: ClientLimits,
    private readonly pinned: string | undefined,
  ) {
    this.coalescer = new Coalescer(
      (target, bytes, deadline) => this.single(target as Target, bytes, deadline),
      limits.coalesceItemsMax,
      () => this.maxPayload() - NET.frameOverheadBytes,
    );
  }

  /**
   * A request with one result. A call that is safe to repeat waits at most a third of its budget
   * per attempt, so a request lost in flight (core NATS is at most once, e.g. across a reconnect)
   * is sent again within the budget; any other call waits for its whole budget once.
   */
  request(call: CallOptions, body: WireMap | ValueRequest): Promise<unknown> {
    const streamed = isValueRequest(body) && !(body.value instanceof Uint8Array) ? body.value : undefined;
    const canRetry = streamed === undefined ? undefined : () => !startedValues.has(streamed);
    return this.withRetry(call, (target, deadline) => this.exchange(target, body, call.idempotent, call.idempotent ? Date.now() + this.attemptMs(deadline) : deadline), canRetry);
  }

  /**
   * How long one attempt of a repeatable call may wait for a reply message: a third of the budget,
   * at most `attemptTimeoutMs`, within the deadline. A request can vanish without a "no responders"
   * answer (core NATS is at most once; a server killed a moment ago may still be sent it), and
   * that costs one attempt before the call asks the coordinator again.
   */
  private attemptMs(deadline: number): number {
    return Math.min(deadline - Date.now(), Math.ceil(this.limits.timeoutMs / 3), this.limits.attemptTimeoutMs);
  }

  /** A request answered by a reply stream: yields each item; `onFrame` sees every batch and the end. */
  async *items(call: CallOptions, body: WireMap, onFrame?: (frame: WireMap) => void): AsyncGenerator<unknown> {
    const opened = await this.withRetry(call, async (target, deadline) => {
      const ch = this.transport.open();
      const reader = new ReplyReader(this, ch, target, this.limits);
      try {
        this.transport.publish(target.subject, encode(body), ch);
        return { reader, frame: await reader.frame(this.attemptMs(deadline)) };
      } catch (err) {
        ch.close();
        throw err;
      }
    });
    const { reader } = opened;
    let frame = opened.frame;
    let ended = false;
    try {
      for (;;) {
        if (Array.isArray(frame.items)) {
          onFrame?.(frame);
          for (const item of frame.items) yield item;
          reader.consumed();
        } else if (frame.end !== undefined) {
          ended = true;
          onFrame?.(isMap(frame.end) ? frame.end : {});
          return;
        } else {
          throw new StrataError("CORRUPT", "unexpected frame in a streamed reply");
        }
        frame = await reader.frame(this.limits.timeoutMs);
      }
    } catch (err) {
      ended = true;
      throw withCallerStack(err instanceof StrataError ? err : fromNatsError(err, "streamed reply"), failedAt());
    } finally {
      if (!ended) reader.cancel();
      reader.close();
    }
  }

  /**
   * @internal Sends a read `body` as one message and hands its reply reader to `start`; the request
   * is sent again (within the call's budget) until `start` resolves, and a reader whose `start`
   * failed is cancelled and closed. Once it resolved, the caller owns the reader (get-streamed.ts).
   */
  async openReply<T>(call: CallOptions, body: WireMap, start: (reader: ReplyReader, attemptMs: number) => Promise<T>): Promise<T> {
    return this.withRetry(call, async (target, deadline) => {
      const reader = new ReplyReader(this, this.transport.open(), target, this.limits);
      try {
        this.transport.publish(target.subject, encode(body), reader.channel);
        return await start(reader, this.attemptMs(deadline));
      } catch (err) {
        reader.abandon();
        throw err;
      }
    });
  }

  /** @internal Publishes a credit (or cancel) for a reply stream; best effort. */
  credit(subject: string, ch: Channel, stream: string, n: number | undefined): void {
    try {
      this.transport.publish(subject, encode(n === undefined ? { op: "credit", stream, cancel: true } : { op: "credit", stream, n }), ch);
    } catch {
      // the connection is gone; the server abandons the stream after replyIdleMs
    }
  }

  private async withRetry<T>(call: CallOptions, attempt: (target: Target, deadline: number) => Promise<T>, canRetry?: () => boolean): Promise<T> {
    const deadline = Date.now() + this.limits.timeoutMs;
    const delays = retryDelays(this.limits);
    for (;;) {
      let server: string | undefined;
      try {
        server = this.pinned ?? (await this.locate(call.location, deadline));
        const subject = requestSubject(this.prefix, call.cls, server, call.location);
        const target = { subject, what: `${call.location} on server "${server}"`, write: call.cls === "w", location: call.location };
        return await attempt(target, deadline);
      } catch (e) {
        const err = e instanceof StrataError ? e : fromNatsError(e, `request for ${call.location}`);
        const unreachable = err.code === "UNAVAILABLE" || err.code === "TIMEOUT";
        // Ask the coordinator again next time, even when this call cannot be retried.
        if (unreachable && server !== undefined && this.servers.get(call.location) === server) this.servers.delete(call.location);
        const retry = (err.code === "UNAVAILABLE" || (err.code === "TIMEOUT" && call.idempotent)) && (canRetry?.() ?? true);
        const wait = delays.next();
        if (!retry || Date.now() + wait >= deadline) throw withCallerStack(err, failedAt());
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    }
  }

  /** The server of a location: pinned, cached, or asked of the coordinator. */
  private async locate(location: string, deadline: number): Promise<string> {
    const cached = this.servers.get(location);
    if (cached !== undefined) return cached;
    const subject = locateSubject(this.prefix);
    const what = `locating ${location} (coordinator at ${subject})`;
    const ch = this.transport.open();
    try {
      this.transport.publish(subject, encode({ location }), ch);
      const msg = await ch.next(this.attemptMs(deadline), () => timeoutError(what, this.limits.timeoutMs, false));
      const err = errorOfReply(msg, () => what);
      if (err) throw err;
      const reply = decodeMap(msg.data, "the coordinator's reply");
      const server = validateServerId(reply.server);
      if (this.servers.size >= this.limits.locateCacheMax) this.servers.clear();
      this.servers.set(location, server);
      if (typeof reply.epoch === "number") this.sawEpoch(location, reply.epoch);
      return server;
    } finally {
      ch.close();
    }
  }

  private async exchange(target: Target, body: WireMap | ValueRequest, idempotent: boolean, deadline: number): Promise<unknown> {
    const max = this.maxPayload();
    let bytes: Uint8Array | undefined;
    let upload: { head: Uint8Array; value?: Uint8Array | StreamedValue } | undefined;
    let op: unknown;
    if (isValueRequest(body)) {
      // Encode once: a value smaller than a message is tried inline, and only a request that
      // then turns out too large (or a value that cannot fit) is sent as an upload. A streamed
      // value is always uploaded.
      const value = body.value;
      if (value instanceof Uint8Array && value.byteLength < max) {
        const inline = body.build(value);
        op = inline.op;
        bytes = encode(inline);
      }
      if (bytes === undefined || bytes.byteLength > max) upload = { head: encode(body.build()), value };
    } else {
      op = body.op;
      bytes = encode(body);
      if (bytes.byteLength > max) upload = { head: bytes };
    }
    if (upload) {
      if (!target.write) throw new StrataError("TOO_LARGE", `a read request of ${bytes?.byteLength} bytes does not fit in one message`);
      return this.upload(target, upload.head, upload.value);
    }
    // Calls that may be sent again wait a third of their budget per attempt, the others all of it:
    // they are coalesced apart, so that a batch waits as long as each of its calls would.
    if (this.coalescer.accepts(op, bytes!.byteLength)) return this.coalescer.add(target, idempotent, bytes!, deadline);
    return this.single(target, bytes!, deadline);
  }

  /** One request in one message, one result (possibly sent back in parts). */
  private async single(target: Target, bytes: Uint8Array, deadline: number): Promise<unknown> {
    const ch = this.transport.open();
    const reader = new ReplyReader(this, ch, target, this.limits);
    try {
      this.transport.publish(target.subject, bytes, ch);
      const frame = await reader.frame(deadline - Date.now());
      return resultOf(frame);
    } finally {
      reader.close();
    }
  }

  /** Sends `head ++ value` as chunks within the window the server grants. */
  private async upload(target: Target, head: Uint8Array, value: Uint8Array | StreamedValue | undefined): Promise<unknown> {
    const ch = this.transport.open();
    const reader = new ReplyReader(this, ch, target, this.limits);
    const idle = this.limits.timeoutMs;
    try {
      this.transport.publish(target.subject, encode({ op: "upload", head: head.byteLength, bytes: value === undefined ? 0 : value instanceof Uint8Array ? value.byteLength : value.bytes }), ch);
      const first = await reader.frame(idle);
      if (typeof first.up !== "string" || typeof first.grant !== "number") return resultOf(first);
      const upload = first.up;
      let granted = first.grant;
      let k = 0;
      const chunks = uploadChunks(head, value, this.chunkBytes());
      const source = Symbol.asyncIterator in chunks ? chunks[Symbol.asyncIterator]() : chunks[Symbol.iterator]();
      let sent = false;
      try {
        for (;;) {
          let next: IteratorResult<Uint8Array>;
          try {
            next = await source.next();
          } catch (err) {
            // The source failed (an HTTP sender went away): free the server's upload slot now, not
            // after uploadIdleMs. Best effort; the server times the upload out anyway.
            this.transport.publish(target.subject, encode({ op: "chunk", upload, cancel: true }), ch);
            sent = true; // a failed iterator is finished
            throw err;
          }
          if (next.done) break;
          while (k >= granted) {
            const frame = await reader.frame(idle);
            if (frame.up === upload && typeof frame.grant === "number") granted = Math.max(granted, frame.grant);
            else return resultOf(frame);
          }
          this.transport.publish(target.subject, encode({ op: "chunk", upload, k, data: next.value }), ch);
          k += 1;
        }
        sent = true;
      } finally {
        // Answered before the value was all sent (an error, or the reply timed out): close the source.
        if (!sent) await source.return?.();
      }
      for (;;) {
        const frame = await reader.frame(idle);
        if (frame.up === undefined) return resultOf(frame);
      }
    } finally {
      reader.close();
    }
  }

  /**
   * Records an epoch seen for `location`; false when it is older than one seen before (the reply
   * comes from a server that no longer holds the location).
   */
  sawEpoch(location: string, epoch: number): boolean {
    const known = this.epochs.get(location);
    if (known !== undefined && epoch < known) return false;
    if (known === undefined && this.epochs.size >= this.limits.locateCacheMax) this.epochs.clear();
    if (known !== epoch) this.epochs.set(location, epoch);
    return true;
  }

  maxPayload(): number {
    return this.transport.nc.info?.max_payload ?? 1024 * 1024;
  }

  private chunkBytes(): number {
    return chunkDataBytes(this.maxPayload(), NET.frameOverheadBytes, NET.maxPayloadMinBytes);
  }
}

/** The chunks of `head ++ value`; a streamed value is read as chunks are sent, and must hold exactly its declared bytes. */
function uploadChunks(head: Uint8Array, value: Uint8Array | StreamedValue | undefined, size: number): Iterable<Uint8Array> | AsyncIterable<Uint8Array> {
  if (value === undefined || value instanceof Uint8Array) return sliceChunks(value ? [head, value] : [head], size);
  return sliceChunksFrom(streamedBytes(head, value), size);
}

async function* streamedBytes(head: Uint8Array, value: StreamedValue): AsyncGenerator<Uint8Array> {
  yield head;
  startedValues.add(value);
  let seen = 0;
  for await (const piece of value.chunks) {
    seen += piece.byteLength;
    if (seen > value.bytes) break;
    yield piece;
  }
  if (seen !== value.bytes) throw new StrataError("INVALID_ARGUMENT", `a streamed value declared ${value.bytes} bytes but its source gave ${seen > value.bytes ? "more" : seen}; nothing was written`);
}

function resultOf(frame: WireMap): unknown {
  if (!("ok" in frame)) throw new StrataError("CORRUPT", "the server's reply has no result");
  return frame.ok;
}

function isValueRequest(body: WireMap | ValueRequest): body is ValueRequest {
  return typeof body.build === "function";
}

function isMap(value: unknown): value is WireMap {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/**
 * The stack for a failed call, which arrives in a NATS callback: the async callers V8 can name
 * from inside the failing call (V8's async stack traces reach every caller that awaits it), so
 * the error points at the caller's code, not at the reply handler. It is built only when a call
 * fails; capturing a stack when every call begins cost about a fifth of the client's CPU.
 */
function failedAt(): Error {
  const frames = new Error().stack?.split("\n").slice(2) ?? []; // from the library function that failed
  const callers = frames.filter((line) => !line.includes("node:internal/"));
  const out = new Error();
  out.stack = ["Error", ...callers].join("\n");
  return out;
}

/** The delays between a client's retries (the project's one backoff, src/backoff.ts). */
export function retryDelays(limits: Pick<ClientLimits, "retryBackoffMinMs" | "retryBackoffMaxMs">): Backoff {
  return backoff({ initialMs: limits.retryBackoffMinMs, maxMs: limits.retryBackoffMaxMs });
}

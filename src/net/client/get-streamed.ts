/**
 * Reading a value as it arrives (`kv.getStreamed`, `stream.getStreamed`): the value of a get comes
 * back as chunks the caller pulls, instead of being reassembled whole (client-call.ts get path).
 *
 * A get whose reply exceeds max_payload travels as the parts of one frame `{ e?, ok: { ...,
 * value } }` over a reply stream (server-replies.ts), and the server always puts a large value
 * last (encodeWithTail), so the frame is `head ++ byteStringHeader(n) ++ value`. The head is found
 * in the first parts (HeadBuffer), decoded for the entry's fields, and the rest of the frame is
 * handed over part by part as the value's chunks.
 *
 * Invariants (bounded memory per read): a part is credited back to the server only when it is
 * handed to the consumer, so the client holds at most the reply window (`replyWindowMessages`
 * messages of max_payload) plus the chunk being read, never the value. Abandoning the chunks
 * (return()/throw(), before or during iteration) or a failure cancels the server's reply stream.
 * The request is sent again (retryable failures) only until the head was read: no chunk has been
 * handed over yet. A reply whose value is not its last item (only a small value with very large
 * headers) is reassembled whole within the client's replyBytesMax and given as one chunk.
 */
import { StrataError } from "../../errors.js";
import type { Caller, CallOptions } from "./client-call.js";
import type { ReplyReader } from "./reply-reader.js";
import { decodeUntrusted, isPlainMap, type WireMap } from "../wire/wire-codec.js";
import { fromNatsError } from "../wire/wire-errors.js";

/** The chunks of one value, in order; return() abandons the rest (and the server's reply stream). */
export interface ValueChunks extends AsyncIterableIterator<Uint8Array> {
  /**
   * True when the value is arriving in parts as it is read: the chunks hold a reply stream of the
   * server (and about a window of messages) until they are read to the end or returned. False when
   * the value came whole in one message (it is one chunk, or none when empty).
   */
  readonly streamed: boolean;
  return(): Promise<IteratorResult<Uint8Array>>;
}

/** A get read as it arrives: the entry's fields with `bytes` (the value's length), and the value's chunks. */
export interface StreamedGet<M> {
  meta: M & { bytes: number };
  chunks: ValueChunks;
}

/** The result map of a get (its value left empty when streamed), the value's length, and its chunks. */
export interface StreamedResult {
  result: WireMap;
  bytes: number;
  chunks: ValueChunks;
}

/**
 * Most bytes of a reply searched for the start of its value. A head is the entry's fields (key,
 * headers: tens of KiB at most under the store's limits); past this the reply is taken to have
 * its value elsewhere and is reassembled whole.
 */
const HEAD_SCAN_BYTES_MAX = 4 * 1024 * 1024;

const DONE: IteratorResult<Uint8Array> = { done: true, value: undefined };
const EMPTY_BYTE_STRING = new Uint8Array([0x40]);

/** Sends a get (`body`, a kv.get or stream.get) and reads its reply up to the value's first bytes. */
export async function getStreamed(caller: Caller, call: CallOptions, body: WireMap): Promise<StreamedResult | undefined> {
  return caller.openReply(call, body, async (reader, attemptMs) => {
    const first = await reader.message(attemptMs);
    if (first.part === undefined) {
      reader.close();
      if (!("ok" in first)) throw new StrataError("CORRUPT", "the server's reply has no result");
      if (first.ok === null || first.ok === undefined) return undefined;
      const result = resultMap(first.ok);
      const value = result.value as Uint8Array;
      return { result, bytes: value.byteLength, chunks: new WholeChunks(value) };
    }
    return readHead(caller, reader, first);
  });
}

/** Reads parts until the value's start is known; the parts after it become the chunks. */
async function readHead(caller: Caller, reader: ReplyReader, first: WireMap): Promise<StreamedResult | undefined> {
  const total = first.of;
  if (typeof total !== "number" || !Number.isSafeInteger(total) || total < 1) throw corrupt("the first part does not declare the frame's size");
  if (total > caller.limits.replyBytesMax) throw new StrataError("TOO_LARGE", `a reply of ${total} bytes exceeds the client's limit of ${caller.limits.replyBytesMax} bytes`);
  const head = new HeadBuffer(total);
  let frame = first;
  for (let k = 0; ; k++) {
    const last = checkPart(frame, k);
    head.push(frame.data as Uint8Array);
    reader.consumed();
    if (last !== (head.filled === total)) throw corrupt(`the parts hold ${head.filled} of ${total} declared bytes`);
    const found = head.find();
    if (found !== undefined) {
      const frameHead = reader.checked(found.head);
      const result = resultMap(frameHead.ok);
      const received = head.bytes().subarray(found.at);
      if (last) reader.close();
      const chunks = last ? new WholeChunks(received) : new PartChunks(reader, received, k + 1, head.filled, total, caller.limits.timeoutMs);
      return { result, bytes: total - found.at, chunks };
    }
    if (last) {
      // The value is not the frame's last item: the whole frame is here (and bounded by replyBytesMax).
      reader.close();
      const whole = reader.checked(decodeFrame(head.bytes()));
      if (!("ok" in whole)) throw new StrataError("CORRUPT", "the server's reply has no result");
      if (whole.ok === null || whole.ok === undefined) return undefined;
      const result = resultMap(whole.ok);
      const value = result.value as Uint8Array;
      return { result, bytes: value.byteLength, chunks: new WholeChunks(value) };
    }
    frame = await reader.message(caller.limits.timeoutMs);
  }
}

/** Whether part `frame` is well formed and the `k`th; returns its `last` flag. */
function checkPart(frame: WireMap, k: number): boolean {
  if (frame.part === undefined) throw corrupt("a result arrived between the parts of a reply");
  if (frame.part !== k) throw corrupt(`part ${String(frame.part)} arrived where part ${k} was expected`);
  if (!(frame.data instanceof Uint8Array)) throw corrupt("a part has no data");
  return frame.last === true;
}

function resultMap(ok: unknown): WireMap {
  if (!isPlainMap(ok) || !(ok.value instanceof Uint8Array)) throw new StrataError("CORRUPT", "the server's answer to a get is not an entry with a value");
  return ok;
}

function decodeFrame(bytes: Uint8Array): WireMap {
  const frame = decodeUntrusted(bytes, "a reassembled reply");
  if (!isPlainMap(frame)) throw new StrataError("CORRUPT", "a reassembled reply is not a map");
  return frame;
}

function corrupt(what: string): StrataError {
  return new StrataError("CORRUPT", `malformed chunked reply: ${what}`);
}

/**
 * The first bytes of a frame, and where its value starts: the position p of a byte-string header
 * whose length runs exactly to the frame's end, such that the bytes before p followed by an empty
 * byte string decode to `{ ..., ok: { ..., value: <empty> } }`. With definite-length maps (all the
 * server encodes), only the real header passes: any other cut either ends inside an item or leaves
 * a container unfinished, and does not decode. Positions are checked once each, as bytes arrive.
 */
class HeadBuffer {
  private buf: Uint8Array = new Uint8Array(0);
  filled = 0;
  private from = 0;

  constructor(private readonly total: number) {}

  push(data: Uint8Array): void {
    if (this.filled + data.byteLength > this.total) throw corrupt("the parts are larger than the declared frame");
    if (this.filled === 0) {
      this.buf = data; // most heads are found in the first part: no copy
      this.filled = data.byteLength;
      return;
    }
    if (this.filled + data.byteLength > this.buf.byteLength) {
      const grown = Buffer.allocUnsafe(Math.min(this.total, Math.max(2 * this.buf.byteLength, this.filled + data.byteLength)));
      grown.set(this.buf.subarray(0, this.filled));
      this.buf = grown;
    }
    this.buf.set(data, this.filled);
    this.filled += data.byteLength;
  }

  bytes(): Uint8Array {
    return this.buf.subarray(0, this.filled);
  }

  find(): { at: number; head: WireMap } | undefined {
    const b = this.buf;
    const n = this.filled;
    const limit = Math.min(n, HEAD_SCAN_BYTES_MAX);
    let p = this.from;
    for (; p < limit; p++) {
      const x = b[p]!;
      if ((x & 0xe0) !== 0x40) continue; // not a byte string
      const info = x & 0x1f;
      const hl = info < 24 ? 1 : info === 24 ? 2 : info === 25 ? 3 : info === 26 ? 5 : info === 27 ? 9 : 0;
      if (hl === 0) continue;
      if (p + hl > n) break; // the header is not all here yet: look again when more arrived
      let len = info < 24 ? info : 0;
      for (let i = 1; i < hl; i++) len = len * 256 + b[p + i]!;
      if (p + hl + len !== this.total) continue;
      const head = headOf(b.subarray(0, p));
      if (head !== undefined) return { at: p + hl, head };
    }
    this.from = p;
    return undefined;
  }
}

/** The frame `prefix ++ <empty byte string>` if it is a get's result with its value last, else undefined. */
function headOf(prefix: Uint8Array): WireMap | undefined {
  let frame: unknown;
  try {
    frame = decodeUntrusted(Buffer.concat([prefix, EMPTY_BYTE_STRING]), "a reply's head");
  } catch {
    return undefined;
  }
  if (!isPlainMap(frame) || Object.keys(frame).at(-1) !== "ok") return undefined;
  const ok = frame.ok;
  if (!isPlainMap(ok) || Object.keys(ok).at(-1) !== "value" || !(ok.value instanceof Uint8Array) || ok.value.byteLength !== 0) return undefined;
  return frame;
}

/** A value that came whole: one chunk (none when empty). */
class WholeChunks implements ValueChunks {
  readonly streamed = false;
  private value: Uint8Array | undefined;

  constructor(value: Uint8Array) {
    this.value = value.byteLength > 0 ? value : undefined;
  }

  async next(): Promise<IteratorResult<Uint8Array>> {
    const value = this.value;
    this.value = undefined;
    return value === undefined ? DONE : { done: false, value };
  }

  async return(): Promise<IteratorResult<Uint8Array>> {
    this.value = undefined;
    return DONE;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}

/**
 * The value's chunks as its parts arrive: the bytes after the head in the parts read so far, then
 * one chunk per part. Each part is credited when it is handed over (ReplyReader.consumed), so the
 * server sends more only as the consumer reads. Not an async generator: return() must cancel the
 * reply stream even before the first next(), which a generator would skip.
 */
class PartChunks implements ValueChunks {
  readonly streamed = true;
  private done = false;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly reader: ReplyReader,
    private pending: Uint8Array | undefined,
    private k: number,
    private received: number,
    private readonly total: number,
    private readonly timeoutMs: number,
  ) {}

  next(): Promise<IteratorResult<Uint8Array>> {
    // One part at a time, even if next() is called again before the last one settled.
    const run = this.chain.then(() => this.read());
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async read(): Promise<IteratorResult<Uint8Array>> {
    if (this.done) return DONE;
    const pending = this.pending;
    this.pending = undefined;
    if (pending !== undefined && pending.byteLength > 0) return { done: false, value: pending };
    try {
      const frame = await this.reader.message(this.timeoutMs);
      const last = checkPart(frame, this.k);
      const data = frame.data as Uint8Array;
      this.received += data.byteLength;
      if (this.received > this.total) throw corrupt("the parts are larger than the declared frame");
      if (last !== (this.received === this.total)) throw corrupt(`the parts hold ${this.received} of ${this.total} declared bytes`);
      this.k += 1;
      this.reader.consumed();
      if (last) this.finish(false);
      return data.byteLength > 0 ? { done: false, value: data } : this.read();
    } catch (err) {
      this.finish(true);
      throw err instanceof StrataError ? err : fromNatsError(err, "a streamed read");
    }
  }

  async return(): Promise<IteratorResult<Uint8Array>> {
    this.pending = undefined;
    this.finish(true);
    return DONE;
  }

  async throw(err?: unknown): Promise<IteratorResult<Uint8Array>> {
    await this.return();
    throw err;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** Closes the reader once; `abandon`: the stream has not ended, so the server's side is cancelled too. */
  private finish(abandon: boolean): void {
    if (this.done) return;
    this.done = true;
    if (abandon) this.reader.abandon();
    else this.reader.close();
  }
}

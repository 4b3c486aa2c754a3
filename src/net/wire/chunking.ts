/**
 * Pure helpers for moving byte sequences larger than one NATS message: slicing a sequence (held as
 * a list of buffers, e.g. request head + value) into chunks, and reassembling the parts of one
 * frame into a buffer whose size was declared up front. No I/O here; both sides of the protocol
 * (server/server-uploads.ts, server/server-replies.ts, server/reply-stream.ts,
 * client/client-call.ts) build on these.
 */
import { StrataError } from "../../errors.js";

/** Data bytes per chunk or part, leaving room for the CBOR envelope in a max_payload message. */
export function chunkDataBytes(maxPayload: number, overheadBytes: number, minPayload: number): number {
  if (!Number.isSafeInteger(maxPayload) || maxPayload < minPayload) {
    throw new StrataError("UNAVAILABLE", `the NATS connection's max_payload (${maxPayload}) is below the ${minPayload} bytes strata needs; raise max_payload in nats-server`);
  }
  return maxPayload - overheadBytes;
}

/** How many chunks of `chunkBytes` an upload window of `windowBytes` allows, within [min, max]. */
export function windowChunks(windowBytes: number, chunkBytes: number, min: number, max: number): number {
  return Math.max(min, Math.min(max, Math.floor(windowBytes / chunkBytes)));
}

/** Total bytes of a list of buffers. */
export function totalBytes(parts: readonly Uint8Array[]): number {
  let n = 0;
  for (const p of parts) n += p.byteLength;
  return n;
}

/**
 * As sliceChunks, for pieces that arrive one by one (e.g. a large value read chunk record by chunk
 * record): holds at most one chunk besides the piece being sliced.
 */
export async function* sliceChunksFrom(source: AsyncIterable<Uint8Array>, size: number): AsyncGenerator<Uint8Array> {
  if (!Number.isSafeInteger(size) || size < 1) throw new RangeError(`chunk size must be a positive integer, got ${size}`);
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  for await (const piece of source) {
    let off = 0;
    while (off < piece.byteLength) {
      const take = Math.min(size - pendingBytes, piece.byteLength - off);
      pending.push(piece.subarray(off, off + take));
      pendingBytes += take;
      off += take;
      if (pendingBytes === size) {
        yield pending.length === 1 ? pending[0]! : Buffer.concat(pending, size);
        pending = [];
        pendingBytes = 0;
      }
    }
  }
  if (pendingBytes > 0) yield Buffer.concat(pending, pendingBytes);
}

/**
 * Yields the concatenation of `parts` as successive chunks of exactly `size` bytes (the last may be
 * shorter). A chunk that lies within one part is a view of it; only chunks that straddle parts are
 * copied, so slicing a 1 GiB value allocates at most one chunk at a time.
 */
export function* sliceChunks(parts: readonly Uint8Array[], size: number): Generator<Uint8Array> {
  if (!Number.isSafeInteger(size) || size < 1) throw new RangeError(`chunk size must be a positive integer, got ${size}`);
  let i = 0;
  let off = 0;
  for (;;) {
    while (i < parts.length && off >= parts[i]!.byteLength) {
      i += 1;
      off = 0;
    }
    if (i >= parts.length) return;
    const part = parts[i]!;
    if (part.byteLength - off >= size) {
      yield part.subarray(off, off + size);
      off += size;
      continue;
    }
    const out = new Uint8Array(size);
    let filled = 0;
    while (filled < size && i < parts.length) {
      const p = parts[i]!;
      const take = Math.min(size - filled, p.byteLength - off);
      out.set(p.subarray(off, off + take), filled);
      filled += take;
      off += take;
      if (off >= p.byteLength) {
        i += 1;
        off = 0;
      }
    }
    yield filled === size ? out : out.subarray(0, filled);
  }
}

/**
 * Reassembles the parts of one frame. Part 0 declares the total, which must not exceed `maxBytes`;
 * parts must arrive in order and must add up exactly. Memory: one buffer of the declared size.
 */
export class Reassembler {
  private buffer: Uint8Array | undefined;
  private filled = 0;
  private next = 0;

  constructor(private readonly maxBytes: number) {}

  /** Adds part `k`; returns the whole frame once `last` is set, else undefined. */
  push(k: number, data: Uint8Array, last: boolean, of: number | undefined): Uint8Array | undefined {
    if (k !== this.next) throw protocol(`part ${k} arrived where part ${this.next} was expected`);
    if (k === 0) {
      if (typeof of !== "number" || !Number.isSafeInteger(of) || of < 1) throw protocol("the first part does not declare the frame's size");
      if (of > this.maxBytes) throw new StrataError("TOO_LARGE", `a reply of ${of} bytes exceeds the client's limit of ${this.maxBytes} bytes`);
      this.buffer = Buffer.allocUnsafe(of);
    }
    const buffer = this.buffer!;
    if (this.filled + data.byteLength > buffer.byteLength) throw protocol("the parts are larger than the declared frame");
    buffer.set(data, this.filled);
    this.filled += data.byteLength;
    this.next += 1;
    if (!last) return undefined;
    if (this.filled !== buffer.byteLength) throw protocol(`the parts hold ${this.filled} of ${buffer.byteLength} declared bytes`);
    this.buffer = undefined;
    this.filled = 0;
    this.next = 0;
    return buffer;
  }

  get active(): boolean {
    return this.next > 0;
  }
}

function protocol(what: string): StrataError {
  return new StrataError("CORRUPT", `malformed chunked reply: ${what}`);
}

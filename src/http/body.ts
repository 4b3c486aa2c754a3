/**
 * Request bodies of the gateway, taken with a bound. A body larger than `httpBodyBytesMax` is
 * refused with 413 before any of it is read (by its Content-Length) or as soon as it passes the
 * limit (a chunked body). A body whose Content-Length is above `httpBodyBufferBytesMax` is not held:
 * it becomes a StreamedValue (src/net/client/client-call.ts) that the client reads chunk by chunk
 * while it uploads, so the HTTP sender is paced by the server's upload grants. Smaller bodies, and
 * bodies without Content-Length (whose length the upload needs up front), are held whole.
 * All bodies in flight stay within `httpBodyInflightBytesMax` (past it, 503 BUSY with Retry-After):
 * a held body reserves its length before reading, a streamed one httpBodyBufferBytesMax, and one
 * without Content-Length (chunked) `CHUNKED_RESERVE_STEP_BYTES` at first and more, a step at a time,
 * as its bytes arrive; it is refused 503 when the next step does not fit. (It used to reserve
 * httpBodyBytesMax up front: sixteen small chunked uploads held the whole default budget.)
 *
 * Invariants: a reservation is taken before the first byte is read and released exactly once
 * (by `release()`, after the write the body feeds has finished); the inflight total never exceeds
 * the budget. A refused body is not read further: the reader is cancelled and the answer asks the
 * client to close the connection, so the rest of an oversized upload is not drained into memory.
 */
import { StrataError } from "../errors.js";
import type { StreamedValue } from "../net/client/client-call.js";
import { HttpError } from "./http-errors.js";
import type { HttpLimits } from "./http-limits.js";

/** What a body without Content-Length reserves at first, and per step as it grows. */
const CHUNKED_RESERVE_STEP_BYTES = 64 * 1024;

/** A request body: held (`bytes`) or streamed (`streamed`), and its reservation. */
export interface TakenBody {
  bytes?: Uint8Array;
  streamed?: StreamedValue;
  /** Gives the body's reservation back; call once the write it feeds has finished. */
  release(): void;
}

export class BodyBudget {
  private inflight = 0;

  constructor(private readonly limits: Pick<HttpLimits, "httpBodyBytesMax" | "httpBodyBufferBytesMax" | "httpBodyInflightBytesMax">) {}

  /** Bytes reserved by bodies in flight now (for tests and metrics). */
  get inflightBytes(): number {
    return this.inflight;
  }

  async take(req: Request): Promise<TakenBody> {
    const max = this.limits.httpBodyBytesMax;
    const declared = contentLength(req.headers.get("content-length"));
    if (declared !== undefined && declared > max) throw tooLarge(max);
    const stream = declared !== undefined && declared > this.limits.httpBodyBufferBytesMax && req.body !== null;
    let reserved = stream ? this.limits.httpBodyBufferBytesMax : (declared ?? Math.min(max, CHUNKED_RESERVE_STEP_BYTES));
    this.reserve(reserved, undefined);
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      this.inflight -= reserved;
    };
    if (stream) return { streamed: { bytes: declared, chunks: pieces(req.body!) }, release };
    // A body of unknown length reserves more as it grows, a step at a time (never past max).
    const grow = (total: number) => {
      if (total <= reserved) return;
      const more = Math.min(max, Math.max(total, reserved + CHUNKED_RESERVE_STEP_BYTES)) - reserved;
      this.reserve(more, total);
      reserved += more;
    };
    try {
      return { bytes: await readBounded(req, max, grow), release };
    } catch (err) {
      release();
      throw err;
    }
  }

  /** Takes `bytes` more of the budget, or refuses with 503 (`received`: bytes of the body already read). */
  private reserve(bytes: number, received: number | undefined): void {
    if (this.inflight + bytes > this.limits.httpBodyInflightBytesMax) {
      const where = received === undefined ? "" : ` (this body had sent ${received} bytes without a Content-Length; nothing was written)`;
      throw new HttpError(503, "BUSY", `the gateway holds ${this.inflight} bytes of request bodies (httpBodyInflightBytesMax ${this.limits.httpBodyInflightBytesMax}); retry later${where}`, received === undefined ? undefined : { connection: "close" });
    }
    this.inflight += bytes;
  }
}

/** The body's pieces as they arrive; a body cut off by its sender is an INVALID_ARGUMENT. */
async function* pieces(body: ReadableStream<Uint8Array>): AsyncGenerator<Uint8Array> {
  const reader = body.getReader();
  let done = false;
  try {
    for (;;) {
      const r = await readPiece(reader);
      if (r.done) {
        done = true;
        return;
      }
      yield r.value;
    }
  } finally {
    if (!done) reader.cancel().catch(() => {});
  }
}

async function readBounded(req: Request, max: number, grow: (total: number) => void): Promise<Uint8Array> {
  if (req.body === null) return new Uint8Array(0);
  const reader = req.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await readPiece(reader);
    if (done) break;
    total += value.byteLength;
    if (total > max) {
      reader.cancel().catch(() => {});
      throw tooLarge(max);
    }
    try {
      grow(total);
    } catch (err) {
      reader.cancel().catch(() => {});
      throw err;
    }
    chunks.push(value);
  }
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total);
}

/**
 * The next piece of a body. A body that ends early (the sender went away, or Node cut it after
 * httpRequestReceiveMs) is the sender's failure, not the gateway's: INVALID_ARGUMENT, not an
 * internal error logged for every client that disconnects.
 */
async function readPiece(reader: ReadableStreamDefaultReader<Uint8Array>): ReturnType<ReadableStreamDefaultReader<Uint8Array>["read"]> {
  try {
    return await reader.read();
  } catch (cause) {
    throw new StrataError("INVALID_ARGUMENT", "the request body was cut off before its end (the client went away, or sent it slower than httpRequestReceiveMs allows); nothing was written", { cause });
  }
}

/** Content-Length as a number; a malformed one is a 400 (Node refuses most before we see them). */
function contentLength(text: string | null): number | undefined {
  if (text === null) return undefined;
  if (!/^[0-9]{1,16}$/.test(text)) throw new HttpError(400, "INVALID_ARGUMENT", `Content-Length must be a decimal byte count, got ${JSON.stringify(text.slice(0, 40))}`);
  return Number(text);
}

function tooLarge(max: number): HttpError {
  return new HttpError(413, "TOO_LARGE", `the request body is larger than the gateway's httpBodyBytesMax (${max} bytes); send a smaller value or raise --body-bytes-max`, { connection: "close" });
}

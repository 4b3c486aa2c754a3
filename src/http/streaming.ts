/**
 * Streamed responses of the gateway: NDJSON listings, a streamed JSON array of keys, and
 * Server-Sent Events, each a pull-driven ReadableStream over an async iterator of the client.
 *
 * Invariants (bounded memory): the next item is asked of the iterator only when the HTTP response
 * pulls (the Node adapter pulls again only after the socket drained), so a slow HTTP reader pauses
 * the client's reply stream or watch, whose own buffers are bounded; the gateway holds at most one
 * batch (`BATCH_BYTES`) per response. When the HTTP client goes away the stream is cancelled, which
 * ends the iterator (return()), which cancels the reply stream / stops the watch. Each stream
 * holds one slot of `httpStreamsMax` from before its first item until it ends, however it ends.
 * An SSE watch answers its status only once its start was accepted or `httpWatchStartMs` passed
 * (`startedWithin`), so a watch the server refuses gets an error status, not a 200 that ends at once.
 */
import { HttpError } from "./http-errors.js";

/** Bytes gathered into one write of an NDJSON response before it is handed to the socket. */
const BATCH_BYTES = 64 * 1024;

const encoder = new TextEncoder();

/** Counts streamed responses open at once, within `max` (`what`: the responses and the limit's name, for the 503). */
export class StreamSlots {
  private open = 0;

  constructor(
    private readonly max: number,
    private readonly what = "streamed responses open (httpStreamsMax)",
  ) {}

  get count(): number {
    return this.open;
  }

  /** Takes a slot (503 BUSY when none is free); the returned function gives it back, once. */
  acquire(): () => void {
    if (this.open >= this.max) throw new HttpError(503, "BUSY", `the gateway has ${this.open} ${this.what}; retry later`);
    this.open += 1;
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.open -= 1;
    };
  }
}

export interface LinesOptions<T> {
  /** The first item, read before the response was committed (so early errors get a status). */
  first: IteratorResult<T>;
  iterator: AsyncIterator<T>;
  line: (item: T) => string;
  /** Text before the first line and after the last (a JSON array's brackets), if any. */
  open?: string;
  close?: string;
  separator?: string;
  /** What to write when the iterator fails after the response began; undefined aborts the response. */
  failure?: (err: unknown) => string | undefined;
  release: () => void;
}

/** A byte stream of one line per item, gathered into batches of up to BATCH_BYTES. */
export function lineStream<T>(o: LinesOptions<T>): ReadableStream<Uint8Array> {
  let pending: IteratorResult<T> | undefined = o.first;
  let started = false;
  let emitted = 0;
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    o.release();
  };
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        let text = "";
        if (!started) {
          started = true;
          text += o.open ?? "";
        }
        try {
          for (;;) {
            const r = pending ?? (await o.iterator.next());
            pending = undefined;
            if (r.done) {
              text += o.close ?? "";
              controller.enqueue(encoder.encode(text));
              controller.close();
              finish();
              return;
            }
            if (emitted > 0) text += o.separator ?? "";
            text += o.line(r.value);
            emitted += 1;
            if (text.length >= BATCH_BYTES) break;
          }
          controller.enqueue(encoder.encode(text));
        } catch (err) {
          const tail = o.failure?.(err);
          finish();
          if (tail === undefined) {
            controller.error(err);
          } else {
            controller.enqueue(encoder.encode(text + tail));
            controller.close();
          }
        }
      },
      async cancel() {
        finish();
        await o.iterator.return?.();
      },
    },
    { highWaterMark: 0 },
  );
}

/**
 * Waits until `started` settles or `ms` pass, whichever is first: rejects with the failure of a
 * start that failed in time; resolves otherwise (a slow start is not an error: the response begins).
 */
export async function startedWithin(started: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([started, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

export interface SseOptions<T> {
  iterator: AsyncIterator<T>;
  /** The event of an item: its id (omitted when undefined), its name and its data (one line). */
  event: (item: T) => { id?: string; event: string; data: string };
  keepaliveMs: number;
  failure: (err: unknown) => string;
  release: () => void;
}

/** Server-Sent Events, one event per pull; a comment line when nothing came for keepaliveMs. */
export function sseStream<T>(o: SseOptions<T>): ReadableStream<Uint8Array> {
  let next: Promise<IteratorResult<T>> | undefined;
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    o.release();
  };
  return new ReadableStream<Uint8Array>(
    {
      start(controller) {
        // Sent at once so that a client (and any proxy) sees the stream is open before the first event.
        controller.enqueue(encoder.encode(": strata watch\n\n"));
      },
      async pull(controller) {
        next ??= o.iterator.next();
        let timer: NodeJS.Timeout | undefined;
        const idle = new Promise<"idle">((resolve) => (timer = setTimeout(() => resolve("idle"), o.keepaliveMs)));
        try {
          const r = await Promise.race([next, idle]);
          if (r === "idle") {
            controller.enqueue(encoder.encode(": keepalive\n\n"));
            return;
          }
          next = undefined;
          if (r.done) {
            controller.close();
            finish();
            return;
          }
          const e = o.event(r.value);
          controller.enqueue(encoder.encode(`${e.id === undefined ? "" : `id: ${e.id}\n`}event: ${e.event}\ndata: ${e.data}\n\n`));
        } catch (err) {
          next = undefined;
          controller.enqueue(encoder.encode(`event: error\ndata: ${o.failure(err)}\n\n`));
          controller.close();
          finish();
        } finally {
          clearTimeout(timer);
        }
      },
      async cancel() {
        finish();
        await o.iterator.return?.();
      },
    },
    { highWaterMark: 0 },
  );
}

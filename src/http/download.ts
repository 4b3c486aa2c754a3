/**
 * The response of a GET of one value (GET /kv/<loc>/<key>, GET /streams/<loc>/<seq>), from the
 * client's getStreamed (src/net/client/get-streamed.ts).
 *
 * Invariants (bounded memory): a value that came whole (one NATS message) is sent as it is. A
 * larger one is never held whole: it is a pull-driven byte stream, so the next chunk is asked of
 * the client only when the HTTP response pulls (the Node adapter pulls again only after the socket
 * drained), and the client asks the server for the next part only as chunks are read; a download
 * holds about one reply window. Each such download holds a slot of `httpDownloadsMax` from before
 * its first byte until it ends, however it ends (past it: 503 BUSY with Retry-After, and the
 * server's reply stream is cancelled). An HTTP client that goes away cancels the body, which
 * cancels the server's reply stream. Content-Length is the value's length, so a download cut by a
 * failure half way is seen as truncated by the HTTP client.
 */
import type { Logger } from "../logger.js";
import { errorFields } from "../logger.js";
import type { StreamedGet, ValueChunks } from "../net/client/get-streamed.js";
import type { StreamSlots } from "./streaming.js";

export interface DownloadOptions {
  /** The value as it arrives, and its length. */
  got: StreamedGet<object>;
  headers: Record<string, string>;
  downloads: StreamSlots;
  /** A HEAD request: the headers only (the value is not read). */
  head: boolean;
  logger: Logger;
  /** What is being read, for the log of a download that fails half way. */
  what: string;
}

export async function valueResponse(o: DownloadOptions): Promise<Response> {
  const { chunks, meta } = o.got;
  const headers = { ...o.headers, "content-type": "application/octet-stream", "content-length": String(meta.bytes) };
  if (o.head) {
    await chunks.return();
    return new Response(null, { headers });
  }
  if (!chunks.streamed) {
    const r = await chunks.next();
    return new Response(r.done ? new Uint8Array(0) : r.value, { headers });
  }
  let release: () => void;
  try {
    release = o.downloads.acquire();
  } catch (err) {
    await chunks.return();
    throw err;
  }
  return new Response(byteStream(chunks, release, o), { headers });
}

/** The chunks as a byte stream that reads one chunk per pull, and releases its slot once, at its end. */
function byteStream(chunks: ValueChunks, release: () => void, o: DownloadOptions): ReadableStream<Uint8Array> {
  let finished = false;
  const finish = () => {
    if (finished) return;
    finished = true;
    release();
  };
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          const r = await chunks.next();
          if (r.done) {
            controller.close();
            finish();
            return;
          }
          controller.enqueue(r.value);
        } catch (err) {
          // The status and Content-Length are sent: the connection is cut, so the client sees a
          // short body. (After a cancel, the read fails with CLOSED: nothing to report.)
          if (finished) return;
          finish();
          o.logger.warn({ event: "http_download_failed", what: o.what, ...errorFields(err) }, `a download of ${o.what} failed half way; its connection was cut`);
          controller.error(err);
        }
      },
      async cancel() {
        finish();
        await chunks.return();
      },
    },
    { highWaterMark: 0 },
  );
}

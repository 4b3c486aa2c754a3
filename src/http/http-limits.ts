/**
 * The HTTP gateway's own limits (`strata http`), named and resolved like the store's in
 * src/limits.ts: every queue, body and header of the gateway has a bound here, units last.
 * They live apart from src/limits.ts because only the gateway process uses them; the relations
 * between them are checked by `resolveHttpLimits` when the gateway starts.
 *
 * Memory bound of one gateway: at most `httpConnectionsMax` connections (each a socket and a parser),
 * at most `httpBodyInflightBytesMax` of request bodies held at once
 * (each held body at most `httpBodyBufferBytesMax` when it declared its length, else at most
 * `httpBodyBytesMax`, reserved as it arrives; a larger declared body streams through, reserving
 * `httpBodyBufferBytesMax`), plus at most `httpStreamsMax` streamed responses (NDJSON
 * listings and SSE watches), each holding the client's reply window of batches (the server's
 * replyWindowMessages × streamBatchBytesMax: 1 MiB by default) or one watch's bounded queue
 * (src/net/client/watch.ts), plus at most `httpDownloadsMax` GETs of a value larger
 * than one NATS message, each holding about the server's reply window (replyWindowMessages
 * messages of max_payload: 8 MiB by default) and the chunk being written, never the whole value
 * (src/net/client/get-streamed.ts); a smaller value is one message, held once. Each of those is
 * held only while its reader takes bytes: a response that moves nothing for `httpWriteStallMs` is
 * cut, and a request not received within `httpRequestReceiveMs` is refused, so a stalled or
 * vanished client frees what it held within those times.
 */
import { StrataError } from "../errors.js";

export interface HttpLimits {
  /** Largest request body (a kv value or an appended message); larger → 413 before it is read. */
  httpBodyBytesMax: number;
  /**
   * A body with a Content-Length above this streams through to the deployment chunk by chunk
   * (never held whole); a smaller one, or one without Content-Length (chunked), is held, up to
   * httpBodyBytesMax. Also what a streamed body reserves of httpBodyInflightBytesMax.
   */
  httpBodyBufferBytesMax: number;
  /**
   * Request bodies held at once across all requests; past it a write waits for none and gets 503 +
   * Retry-After. A body without Content-Length counts what it has sent so far (in 64 KiB steps).
   */
  httpBodyInflightBytesMax: number;
  /** Largest request head (request line + headers), Node's maxHeaderSize; larger → 431 from Node. */
  httpHeaderBytesMax: number;
  /** Streamed responses (NDJSON listings, SSE watches) open at once; past it → 503 + Retry-After. */
  httpStreamsMax: number;
  /**
   * GETs of a value larger than one NATS message being sent at once (each streams the value with
   * about one reply window of the server held); past it → 503 + Retry-After.
   */
  httpDownloadsMax: number;
  /**
   * TCP connections open at once (Node's server.maxConnections); past it a new connection is closed
   * at once, unanswered. Each streamed response holds one, so at least httpStreamsMax + httpDownloadsMax.
   */
  httpConnectionsMax: number;
  /** Time to receive a whole request (head and body) before Node answers 408. */
  httpRequestReceiveMs: number;
  /** How long an SSE watch may stay quiet before a comment line keeps proxies from closing it. */
  httpSseKeepaliveMs: number;
  /**
   * How long an SSE watch waits for the server to accept its start before it answers: a start that
   * fails within it (FORBIDDEN, WRONG_KIND, a start_seq the server refuses) gets its error status, so
   * an EventSource stops instead of reconnecting for good; one still pending (no server reachable
   * yet: the watch keeps trying) answers 200, and a later failure is an `event: error`.
   */
  httpWatchStartMs: number;
  /**
   * A response whose connection moves no byte for this long once the deployment has answered (its
   * reader takes nothing: a stalled or vanished HTTP client) is cut, so that it gives back its slot
   * of httpStreamsMax / httpDownloadsMax and what it holds. Longer than httpSseKeepaliveMs, or a quiet
   * watch would be cut.
   */
  httpWriteStallMs: number;
  /** On shutdown, how long requests in flight may take to finish before their connections are cut. */
  httpShutdownGraceMs: number;
  /** Seconds a 503 asks the caller to wait (Retry-After). */
  httpRetryAfterSeconds: number;
}

const MiB = 1024 * 1024;

export const DEFAULT_HTTP_LIMITS: Readonly<HttpLimits> = Object.freeze({
  httpBodyBytesMax: 16 * MiB,
  httpBodyBufferBytesMax: 1 * MiB,
  httpBodyInflightBytesMax: 256 * MiB,
  httpHeaderBytesMax: 16 * 1024,
  httpStreamsMax: 1024,
  httpDownloadsMax: 32,
  httpConnectionsMax: 4096,
  httpRequestReceiveMs: 120_000,
  httpSseKeepaliveMs: 15_000,
  httpWatchStartMs: 2_000,
  httpWriteStallMs: 60_000,
  httpShutdownGraceMs: 10_000,
  httpRetryAfterSeconds: 1,
});

export function resolveHttpLimits(partial: Partial<HttpLimits> = {}): HttpLimits {
  const limits: HttpLimits = { ...DEFAULT_HTTP_LIMITS };
  for (const [name, value] of Object.entries(partial)) {
    if (value === undefined) continue;
    if (!(name in DEFAULT_HTTP_LIMITS)) {
      throw new StrataError("INVALID_ARGUMENT", `unknown gateway limit "${name}"; known limits: ${Object.keys(DEFAULT_HTTP_LIMITS).join(", ")}`);
    }
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 1) {
      throw new StrataError("INVALID_ARGUMENT", `gateway limit ${name} must be a positive integer, got ${String(value)}`);
    }
    (limits as unknown as Record<string, number>)[name] = value;
  }
  const rules: Array<[boolean, string]> = [
    [limits.httpBodyInflightBytesMax >= limits.httpBodyBytesMax, "httpBodyInflightBytesMax must be >= httpBodyBytesMax (one largest body must fit)"],
    [limits.httpBodyBufferBytesMax <= limits.httpBodyBytesMax, "httpBodyBufferBytesMax must be <= httpBodyBytesMax"],
    [limits.httpConnectionsMax >= limits.httpStreamsMax + limits.httpDownloadsMax, "httpConnectionsMax must be >= httpStreamsMax + httpDownloadsMax (each streamed response holds a connection)"],
    [limits.httpWriteStallMs > limits.httpSseKeepaliveMs, "httpWriteStallMs must be > httpSseKeepaliveMs (a quiet SSE watch writes only its keepalives)"],
    [limits.httpHeaderBytesMax >= 1024, "httpHeaderBytesMax must be >= 1024 (a request line and a bearer token must fit)"],
  ];
  const broken = rules.filter(([ok]) => !ok).map(([, why]) => why);
  if (broken.length > 0) throw new StrataError("INVALID_ARGUMENT", `inconsistent gateway limits: ${broken.join("; ")}`);
  return limits;
}

/**
 * Every limit and default of the NATS wire layer (server and client), with its unit last in the
 * name. Engine limits (value sizes, batch item counts, …) stay in `src/limits.ts`; these bound
 * what the wire layer itself holds: upload windows, reply windows, sessions, timeouts.
 *
 * `resolveNetLimits` / `resolveClientLimits` check the relations once, like `resolveLimits`.
 */
import { StrataError } from "../errors.js";

const KiB = 1024;
const MiB = 1024 * KiB;

export interface NetLimits {
  /** Bytes kept free in every message for the CBOR envelope around a chunk, part or batch. */
  frameOverheadBytes: number;
  /** Smallest max_payload of a NATS connection the wire protocol accepts. */
  maxPayloadMinBytes: number;
  /** Bytes of one upload the server lets a client send ahead of what it has consumed. */
  uploadWindowBytes: number;
  /** Bounds on the upload window, in chunks, whatever max_payload is. */
  uploadWindowChunksMin: number;
  uploadWindowChunksMax: number;
  /** An upload with no chunk and no progress for this long is abandoned; nothing becomes visible. */
  uploadIdleMs: number;
  /** Most uploads in progress on one server; more are refused with UNAVAILABLE. */
  uploadsMax: number;
  /** Largest request head (everything but the value) of a streamed single-value write. */
  uploadHeadBytesMax: number;
  /** Largest appendMany / setMany request once encoded (it is reassembled in memory). */
  batchBytesMax: number;
  /** Most request-head bytes all uploads of a server may buffer together. */
  uploadHeadBytesTotalMax: number;
  /** Messages of one streamed reply the server sends ahead of the client's credit. */
  replyWindowMessages: number;
  /** A streamed reply whose client grants no credit for this long is abandoned. */
  replyIdleMs: number;
  /** Most streamed replies in progress on one server; more are refused with UNAVAILABLE. */
  replyStreamsMax: number;
  /** Most requests a server handles at once; more are refused with UNAVAILABLE. */
  requestsInFlightMax: number;
  /** Most items in one getAll / keys batch message (each batch also fits in max_payload). */
  batchItemsMax: number;
  /** Most changes in one `changes` reply, and the bytes of values they may carry together. */
  changesPageMax: number;
  changesReplyBytesMax: number;
  /** On stop, how long in-flight requests, uploads and streams may take to finish. */
  shutdownGraceMs: number;
}

export const DEFAULT_NET_LIMITS: Readonly<NetLimits> = Object.freeze({
  frameOverheadBytes: 1 * KiB,
  maxPayloadMinBytes: 8 * KiB,
  uploadWindowBytes: 4 * MiB,
  uploadWindowChunksMin: 2,
  uploadWindowChunksMax: 64,
  uploadIdleMs: 10_000,
  uploadsMax: 64,
  uploadHeadBytesMax: 256 * KiB,
  batchBytesMax: 64 * MiB,
  uploadHeadBytesTotalMax: 256 * MiB,
  replyWindowMessages: 8,
  replyIdleMs: 30_000,
  replyStreamsMax: 1024,
  requestsInFlightMax: 10_000,
  batchItemsMax: 1000,
  changesPageMax: 1000,
  changesReplyBytesMax: 4 * MiB,
  shutdownGraceMs: 10_000,
});

export interface ClientLimits {
  /** Default budget of one call, retries included (the `timeoutMs` client option). */
  timeoutMs: number;
  /** Retry backoff: doubles from min to max, with full jitter. */
  retryBackoffMinMs: number;
  retryBackoffMaxMs: number;
  /** Largest reply the client reassembles from parts. */
  replyBytesMax: number;
  /** Most locations whose server the client remembers. */
  locateCacheMax: number;
  /** An idle watcher asks the server for missed changes this often (catches a lost last change). */
  watchResyncMs: number;
  /** Live changes a watcher buffers while it catches up; past this it drops them and refetches. */
  watchLiveBufferMax: number;
  /** Changes a watcher holds for a slow consumer before it stops reading ahead. */
  watchOutBufferMax: number;
  /** Changes asked for per `changes` request while catching up. */
  watchChangesPage: number;
}

export const DEFAULT_CLIENT_LIMITS: Readonly<ClientLimits> = Object.freeze({
  timeoutMs: 10_000,
  retryBackoffMinMs: 20,
  retryBackoffMaxMs: 1000,
  replyBytesMax: 1024 * MiB + 4 * MiB,
  locateCacheMax: 100_000,
  watchResyncMs: 5000,
  watchLiveBufferMax: 10_000,
  watchOutBufferMax: 1024,
  watchChangesPage: 500,
});

function resolve<T extends object>(defaults: Readonly<T>, partial: Partial<T> | undefined, what: string): T {
  const out = { ...defaults } as T;
  for (const [name, value] of Object.entries(partial ?? {})) {
    if (value === undefined) continue;
    if (!(name in defaults)) throw new StrataError("INVALID_ARGUMENT", `unknown ${what} limit "${name}"`);
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0) {
      throw new StrataError("INVALID_ARGUMENT", `${what} limit ${name} must be a positive integer, got ${String(value)}`);
    }
    (out as Record<string, number>)[name] = value;
  }
  return out;
}

export function resolveNetLimits(partial?: Partial<NetLimits>): NetLimits {
  const l = resolve(DEFAULT_NET_LIMITS, partial, "net");
  const rules: Array<[boolean, string]> = [
    [l.frameOverheadBytes * 4 <= l.maxPayloadMinBytes, "frameOverheadBytes must be at most a quarter of maxPayloadMinBytes"],
    [l.uploadWindowChunksMin >= 1 && l.uploadWindowChunksMin <= l.uploadWindowChunksMax, "uploadWindowChunksMin must be in 1..uploadWindowChunksMax"],
    [l.uploadHeadBytesMax <= l.batchBytesMax, "uploadHeadBytesMax must be <= batchBytesMax"],
    [l.batchBytesMax <= l.uploadHeadBytesTotalMax, "batchBytesMax must be <= uploadHeadBytesTotalMax"],
    [l.replyWindowMessages >= 1, "replyWindowMessages must be >= 1"],
  ];
  const broken = rules.filter(([ok]) => !ok).map(([, why]) => why);
  if (broken.length > 0) throw new StrataError("INVALID_ARGUMENT", `inconsistent net limits: ${broken.join("; ")}`);
  return l;
}

export function resolveClientLimits(partial?: Partial<ClientLimits>): ClientLimits {
  const l = resolve(DEFAULT_CLIENT_LIMITS, partial, "client");
  if (l.retryBackoffMinMs > l.retryBackoffMaxMs) {
    throw new StrataError("INVALID_ARGUMENT", "inconsistent client limits: retryBackoffMinMs must be <= retryBackoffMaxMs");
  }
  return l;
}

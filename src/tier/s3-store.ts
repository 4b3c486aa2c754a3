/**
 * The S3 backend of the object store, for AWS S3 or any S3-compatible server (MinIO, Ceph,
 * s3rver in tests). Object key `k` is stored as `PREFIX/k` in the bucket (`k` with no prefix).
 *
 * The SDK retries transient failures itself (up to `S3_MAX_ATTEMPTS`); what still fails is turned
 * into a `StrataError`: unreachable endpoint, 5xx, throttling and timeouts become `UNAVAILABLE`,
 * refused requests (403, missing bucket, no credentials) become a non-retryable `IO` with a hint.
 * SDK errors are told apart by their `name` and HTTP status, never by message text.
 *
 * Create-only puts (`putIfAbsent`) send `If-None-Match: *`, which S3 (since 2024), MinIO and
 * recent Ceph honour with 412 Precondition Failed. Servers that ignore the header (s3rver 3.7)
 * would overwrite, so unless the backend is declared `createOnly: "enforced"` the put is preceded
 * by a HEAD and only a put racing another within one round trip can replace an object. The default
 * is "enforced" for AWS S3 itself (no endpoint) and "best-effort" for any other endpoint; the tier
 * URL parameter `createOnly=enforced` declares a compatible server that honours the header.
 *
 * Credentials: the ones in the options when given, otherwise the SDK's default chain (the
 * standard AWS_* environment variables, shared config files, instance roles).
 */
import type { S3Client, S3ClientConfig } from "@aws-sdk/client-s3";
import { StrataError } from "../errors.js";
import {
  closedError,
  isObjectKey,
  validateBody,
  validateKey,
  validatePrefix,
  validateRange,
  type ByteRange,
  type ObjectInfo,
  type CreateOnly,
  type ObjectStore,
  type PutIfAbsentResult,
} from "./object-store.js";

/** Region used when none is configured; S3-compatible servers generally ignore it. */
export const S3_DEFAULT_REGION = "us-east-1";
/** Attempts per request, the first included. The SDK backs off (jittered, exponential) between them. */
export const S3_MAX_ATTEMPTS = 3;
/** Longest wait for a TCP (and TLS) connection; an unreachable endpoint fails after this, per attempt. */
export const S3_CONNECTION_TIMEOUT_MS = 3_000;
/**
 * Longest time from sending a request to receiving the response headers, per attempt. Bodies of
 * tens of MiB (a whole sealed segment) must fit in it on a slow link, hence not shorter.
 */
export const S3_REQUEST_TIMEOUT_MS = 60_000;
/** Longest silence on a socket, also while a response body streams in after the headers. */
export const S3_SOCKET_IDLE_TIMEOUT_MS = 30_000;
/** Objects per ListObjectsV2 page; S3 caps it at 1000. */
export const S3_LIST_PAGE_SIZE = 1000;

export interface S3StoreOptions {
  bucket: string;
  /** Key prefix inside the bucket, without leading or trailing `/`; `""` or absent for none. */
  prefix?: string;
  /** Default `S3_DEFAULT_REGION`. */
  region?: string;
  /** An S3-compatible server, e.g. `http://127.0.0.1:9000`. Absent: AWS S3 itself. */
  endpoint?: string;
  /** Path-style URLs (`endpoint/bucket/key`). Default: true when `endpoint` is given, else false. */
  forcePathStyle?: boolean;
  /** Absent: the SDK's default credential chain. */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Objects per listing request, 1..`S3_LIST_PAGE_SIZE` (the default); smaller only for tests. */
  listPageSize?: number;
  /**
   * Whether the server honours `If-None-Match: *` on PutObject (see `ObjectStore.createOnly`).
   * Default: "enforced" without `endpoint` (AWS S3), "best-effort" with one.
   */
  createOnly?: CreateOnly;
}

/** Node error codes of a connection that could not be made or was lost. */
const NETWORK_ERRNOS: ReadonlySet<string> = new Set([
  "ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "EHOSTDOWN",
  "ENETUNREACH", "ENETDOWN", "ENOTFOUND", "EAI_AGAIN", "ESOCKETTIMEDOUT", "UND_ERR_SOCKET",
]);

/** SDK error names of a service that is overloaded, restarting or too slow. */
const UNAVAILABLE_NAMES: ReadonlySet<string> = new Set([
  "TimeoutError", "RequestTimeout", "RequestTimeoutException", "InternalError", "ServiceUnavailable",
  "SlowDown", "ThrottlingException", "Throttling", "TooManyRequestsException",
]);

interface SdkErrorShape {
  name?: unknown;
  code?: unknown;
  cause?: unknown;
  errors?: unknown;
  $metadata?: { httpStatusCode?: number };
}

function statusOf(err: unknown): number | undefined {
  return (err as SdkErrorShape | null)?.$metadata?.httpStatusCode;
}

function nameOf(err: unknown): string {
  const name = (err as SdkErrorShape | null)?.name;
  return typeof name === "string" ? name : "";
}

/** Finds a network errno on the error, its cause, or (Node's happy-eyeballs connect) an AggregateError's members. */
function networkErrnoOf(err: unknown, depth = 0): string | undefined {
  if (err === null || typeof err !== "object" || depth > 3) return undefined;
  const e = err as SdkErrorShape;
  if (typeof e.code === "string" && NETWORK_ERRNOS.has(e.code)) return e.code;
  const nested = [e.cause, ...(Array.isArray(e.errors) ? e.errors : [])];
  for (const inner of nested) {
    const found = networkErrnoOf(inner, depth + 1);
    if (found !== undefined) return found;
  }
  return undefined;
}

type Sdk = typeof import("@aws-sdk/client-s3");

export class S3ObjectStore implements ObjectStore {
  readonly bucket: string;
  readonly prefix: string;
  readonly createOnly: CreateOnly;
  /** The SDK and its client, loaded on first use (the SDK costs ~20 MB of memory, most servers never need it). */
  private loaded: Promise<{ client: S3Client; sdk: Sdk }> | undefined;
  private readonly config: S3ClientConfig;
  private readonly where: string;
  private readonly listPageSize: number;
  private closed = false;

  constructor(options: S3StoreOptions) {
    if (typeof options?.bucket !== "string" || options.bucket.length === 0) {
      throw new StrataError("INVALID_ARGUMENT", "the S3 object store needs a bucket name");
    }
    const prefix = options.prefix ?? "";
    if (prefix !== "") validateKey(prefix);
    const listPageSize = options.listPageSize ?? S3_LIST_PAGE_SIZE;
    if (!Number.isInteger(listPageSize) || listPageSize < 1 || listPageSize > S3_LIST_PAGE_SIZE) {
      throw new StrataError("INVALID_ARGUMENT", `listPageSize must be an integer from 1 to ${S3_LIST_PAGE_SIZE}`);
    }
    this.listPageSize = listPageSize;
    const createOnly = options.createOnly ?? (options.endpoint === undefined ? "enforced" : "best-effort");
    if (createOnly !== "enforced" && createOnly !== "best-effort") {
      throw new StrataError("INVALID_ARGUMENT", `createOnly must be "enforced" or "best-effort", got ${JSON.stringify(createOnly)}`);
    }
    this.createOnly = createOnly;
    this.bucket = options.bucket;
    this.prefix = prefix;
    this.where = `s3://${this.bucket}/${prefix}${options.endpoint === undefined ? "" : ` at ${options.endpoint}`}`;

    const config: S3ClientConfig = {
      region: options.region ?? S3_DEFAULT_REGION,
      forcePathStyle: options.forcePathStyle ?? options.endpoint !== undefined,
      maxAttempts: S3_MAX_ATTEMPTS,
      requestHandler: {
        connectionTimeout: S3_CONNECTION_TIMEOUT_MS,
        requestTimeout: S3_REQUEST_TIMEOUT_MS,
        throwOnRequestTimeout: true,
        socketTimeout: S3_SOCKET_IDLE_TIMEOUT_MS,
      },
    };
    if (options.endpoint !== undefined) config.endpoint = options.endpoint;
    if (options.credentials !== undefined) config.credentials = { ...options.credentials };
    this.config = config;
  }

  private s3(): Promise<{ client: S3Client; sdk: Sdk }> {
    this.loaded ??= import("@aws-sdk/client-s3").then((sdk) => ({ sdk, client: new sdk.S3Client(this.config) }));
    return this.loaded;
  }

  async put(key: string, body: Uint8Array): Promise<void> {
    this.checkOpen();
    validateKey(key);
    validateBody(body);
    await this.call(`put ${key}`, async () => {
      const { client, sdk } = await this.s3();
      return client.send(new sdk.PutObjectCommand({ Bucket: this.bucket, Key: this.s3Key(key), Body: body, ContentLength: body.byteLength }));
    });
  }

  async putIfAbsent(key: string, body: Uint8Array): Promise<PutIfAbsentResult> {
    this.checkOpen();
    validateKey(key);
    validateBody(body);
    // A server that ignores If-None-Match would overwrite: look first (see the file comment).
    if (this.createOnly === "best-effort" && (await this.head(key)) !== undefined) return "exists";
    const what = `put ${key} (create-only)`;
    try {
      const { client, sdk } = await this.s3();
      await client.send(new sdk.PutObjectCommand({
        Bucket: this.bucket,
        Key: this.s3Key(key),
        Body: body,
        ContentLength: body.byteLength,
        IfNoneMatch: "*",
      }));
      return "created";
    } catch (err) {
      const name = nameOf(err);
      const status = statusOf(err);
      // Also the answer to an SDK retry of a put that succeeded but whose reply was lost.
      if (name === "PreconditionFailed" || status === 412) return "exists";
      // S3's answer when a concurrent conditional write to the key is in progress: retry.
      if (name === "ConditionalRequestConflict" || status === 409) {
        if (this.closed) throw closedError("S3");
        throw new StrataError("UNAVAILABLE", `${what} on ${this.where} failed: another conditional write of the key was in progress; retry.`, { cause: err });
      }
      throw this.translate(what, err);
    }
  }

  async get(key: string, range?: ByteRange): Promise<Uint8Array | undefined> {
    this.checkOpen();
    validateKey(key);
    validateRange(range);
    // An HTTP range cannot be empty, so a zero-length read only needs to know the object exists.
    if (range !== undefined && range.length === 0) {
      return (await this.head(key)) === undefined ? undefined : new Uint8Array(0);
    }
    const what = `get ${key}`;
    const answer = await this.ask(what, async () => {
      const { client, sdk } = await this.s3();
      const res = await client.send(new sdk.GetObjectCommand({
        Bucket: this.bucket,
        Key: this.s3Key(key),
        Range: range === undefined ? undefined : `bytes=${range.offset}-${range.offset + range.length - 1}`,
      }));
      const raw = res.Body === undefined ? new Uint8Array(0) : await res.Body.transformToByteArray();
      if (res.ContentLength !== undefined && raw.byteLength !== res.ContentLength) {
        throw new StrataError("UNAVAILABLE",
          `${what} on ${this.where}: the response was cut short (${raw.byteLength} of ${res.ContentLength} bytes); retry`);
      }
      // The SDK hands out a Buffer, and a small one is a window on Node's shared pool: callers
      // get a plain Uint8Array that owns its whole ArrayBuffer, copying only in that case.
      const bytes = raw.byteOffset === 0 && raw.byteLength === raw.buffer.byteLength
        ? new Uint8Array(raw.buffer)
        : new Uint8Array(raw);
      return range === undefined ? bytes : this.cutRange(what, range, bytes, res.$metadata.httpStatusCode, res.ContentRange);
    });
    switch (answer.kind) {
      case "ok":
        return answer.value;
      case "missing":
        return undefined;
      case "unsatisfiable":
        // The range starts at or past the end of an existing object (S3 says 416, also for any
        // range of an empty object); the contract's answer is "no bytes".
        return new Uint8Array(0);
    }
  }

  async head(key: string): Promise<{ size: number } | undefined> {
    this.checkOpen();
    validateKey(key);
    // HEAD answers have no body, so a missing bucket is a bare 404 too and reads as "no object".
    const answer = await this.ask(`head ${key}`, async () => {
      const { client, sdk } = await this.s3();
      return client.send(new sdk.HeadObjectCommand({ Bucket: this.bucket, Key: this.s3Key(key) }));
    });
    return answer.kind === "ok" ? { size: answer.value.ContentLength ?? 0 } : undefined;
  }

  async *list(prefix: string): AsyncGenerator<ObjectInfo> {
    this.checkOpen();
    validatePrefix(prefix);
    const base = this.prefix === "" ? "" : `${this.prefix}/`;
    let token: string | undefined;
    do {
      const page = await this.call(`list ${prefix}`, async () => {
        const { client, sdk } = await this.s3();
        return client.send(new sdk.ListObjectsV2Command({
          Bucket: this.bucket,
          Prefix: (base + prefix) === "" ? undefined : base + prefix,
          ContinuationToken: token,
          MaxKeys: this.listPageSize,
        }));
      });
      for (const object of page.Contents ?? []) {
        const key = object.Key?.slice(base.length);
        // Objects put by something else under names that are not keys cannot be read through
        // this interface, so they are not listed either.
        if (key === undefined || !object.Key?.startsWith(base) || !isObjectKey(key)) continue;
        yield { key, size: object.Size ?? 0 };
      }
      if (page.IsTruncated === true && page.NextContinuationToken === undefined) {
        throw new StrataError("IO", `list ${prefix} on ${this.where}: the server said the listing is truncated but gave no continuation token`, { retryable: false });
      }
      token = page.IsTruncated === true ? page.NextContinuationToken : undefined;
      if (token !== undefined) this.checkOpen();
    } while (token !== undefined);
  }

  async delete(key: string): Promise<void> {
    this.checkOpen();
    validateKey(key);
    // S3 answers 204 for a missing key; some compatible servers answer 404 instead.
    await this.ask(`delete ${key}`, async () => {
      const { client, sdk } = await this.s3();
      return client.send(new sdk.DeleteObjectCommand({ Bucket: this.bucket, Key: this.s3Key(key) }));
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Never used: nothing was loaded, nothing to end.
    const loaded = await this.loaded?.catch(() => undefined);
    loaded?.client.destroy();
  }

  private checkOpen(): void {
    if (this.closed) throw closedError("S3");
  }

  private s3Key(key: string): string {
    return this.prefix === "" ? key : `${this.prefix}/${key}`;
  }

  /**
   * Returns exactly the requested bytes of a ranged answer. Servers are not all exact: one that
   * ignores Range answers 200 with the whole object, and some answer more than asked (s3rver
   * reads `bytes=0-0` as "from 0 to the end"). The answer's own start (Content-Range) says where
   * its bytes sit in the object.
   */
  private cutRange(what: string, range: ByteRange, bytes: Uint8Array, status: number | undefined, contentRange: string | undefined): Uint8Array {
    let start = 0;
    if (status === 206) {
      const match = /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(contentRange ?? "");
      start = match === null ? range.offset : Number(match[1]);
    }
    if (start > range.offset) {
      throw new StrataError("IO", `${what} on ${this.where}: asked for bytes from ${range.offset}, the server answered from ${start}`, { retryable: false });
    }
    const from = range.offset - start;
    if (from === 0 && bytes.length <= range.length) return bytes;
    return bytes.slice(Math.min(from, bytes.length), Math.min(bytes.length, from + range.length));
  }

  /** Runs one SDK call; every error is a failure, translated to a StrataError. */
  private async call<T>(what: string, op: () => Promise<T>): Promise<T> {
    try {
      return await op();
    } catch (err) {
      throw this.translate(what, err);
    }
  }

  /** Like `call`, but "no such object" (404) and "range not satisfiable" (416) are answers. */
  private async ask<T>(what: string, op: () => Promise<T>): Promise<Answer<T>> {
    try {
      return { kind: "ok", value: await op() };
    } catch (err) {
      const name = nameOf(err);
      const status = statusOf(err);
      if (name === "InvalidRange" || status === 416) return { kind: "unsatisfiable" };
      if ((name === "NoSuchKey" || name === "NotFound" || status === 404) && name !== "NoSuchBucket") return { kind: "missing" };
      throw this.translate(what, err);
    }
  }

  private translate(what: string, err: unknown): StrataError {
    if (err instanceof StrataError) return err;
    const name = nameOf(err);
    const status = statusOf(err);
    const detail = `${name === "" ? "" : `${name}: `}${err instanceof Error ? err.message : String(err)}`;
    const at = `${what} on ${this.where} failed`;
    // A request cut off by close() is not an outage.
    if (this.closed) return closedError("S3");
    const errno = networkErrnoOf(err);
    if (errno !== undefined || UNAVAILABLE_NAMES.has(name) || (status !== undefined && (status >= 500 || status === 429))) {
      return new StrataError("UNAVAILABLE", `${at}: ${detail}. The object store is unreachable or overloaded; retry later.`, { cause: err });
    }
    if (name === "CredentialsProviderError") {
      return new StrataError("IO", `${at}: no S3 credentials found. Set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or put accessKeyId and secretAccessKey in the tier URL.`, { cause: err, retryable: false });
    }
    if (name === "NoSuchBucket") {
      return new StrataError("IO", `${at}: bucket ${this.bucket} does not exist; create it first.`, { cause: err, retryable: false });
    }
    if (status === 403 || name === "AccessDenied" || name === "InvalidAccessKeyId" || name === "SignatureDoesNotMatch") {
      return new StrataError("IO", `${at}: ${detail}. Check the credentials and the bucket policy.`, { cause: err, retryable: false });
    }
    const clientError = status !== undefined && status >= 400 && status < 500;
    return new StrataError("IO", `${at}: ${detail}`, { cause: err, retryable: !clientError });
  }
}

/** What S3 said to a request for an object: the result, or one of the two "nothing here" answers. */
type Answer<T> = { kind: "ok"; value: T } | { kind: "missing" } | { kind: "unsatisfiable" };

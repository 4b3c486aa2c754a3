/**
 * The object store of the cold tier: the interface every backend implements, the validation of
 * its keys, prefixes and ranges (done once, at each backend's public edge), and the parsing of the
 * `--tier` URL that picks a backend.
 *
 * Sealed segments, index checkpoints and manifests are written here once and read many times, so
 * the contract is deliberately small: whole-object atomic puts (plain, or create-only where the
 * backend can refuse to replace an object: `putIfAbsent`, `createOnly`), ranged gets (one message can be
 * fetched from a sealed segment with one read), an ordered listing, and deletes. Anything the
 * tier needs beyond that (retries, caching, checksums of the content) is built on top of it.
 *
 * Backends: `dir-store.ts` (a local directory or an NFS mount) and `s3-store.ts` (S3 or any
 * S3-compatible server). `../testing/fault-store.ts` holds an in-memory store and a seeded fault injector
 * for tests. All of them pass the one conformance suite in `test/tier/object-store-suite.ts`.
 */
import { StrataError } from "../errors.js";
import { DirObjectStore, type DirStoreOptions } from "./dir-store.js";
import { S3ObjectStore, type S3StoreOptions } from "./s3-store.js";

/** A byte range of an object: `length` bytes starting at `offset`. */
export interface ByteRange {
  offset: number;
  length: number;
}

/** What `ObjectStore.putIfAbsent` did: stored the object, or found one under the key and left it. */
export type PutIfAbsentResult = "created" | "exists";

/** How strictly a backend keeps `putIfAbsent` from replacing an object; see `ObjectStore.createOnly`. */
export type CreateOnly = "enforced" | "best-effort";

export interface ObjectInfo {
  key: string;
  size: number;
}

/**
 * A flat namespace of immutable-in-place byte objects addressed by key.
 *
 * Keys are `/`-separated relative paths whose segments match `[-_=.a-zA-Z0-9]+` (see
 * `validateKey`); a malformed key, prefix or range is refused with `INVALID_ARGUMENT` before the
 * backend is touched. A key should not also be the directory of another key (`a` next to `a/b`):
 * S3 can hold both, a file system cannot, and the directory backend refuses the second put.
 *
 * Failures of the backend itself (network down, connection refused, HTTP 5xx, throttling,
 * timeouts, a stale NFS handle) reject with a retryable `StrataError("UNAVAILABLE")` whose
 * `cause` is the original error; other I/O failures reject with `IO` (retryable unless the
 * request itself was refused, e.g. access denied). After `close()` every call rejects `CLOSED`.
 */
export interface ObjectStore {
  /**
   * Stores `body` under `key`. Atomic: a concurrent or later reader sees either the whole new
   * object or what was there before, never a prefix. Idempotent: putting the same bytes again
   * succeeds, and putting different bytes overwrites. A put that rejects may or may not have
   * taken effect (the acknowledgement can be lost), but never partially.
   */
  put(key: string, body: Uint8Array): Promise<void>;

  /**
   * Stores `body` under `key` only if no object has that key: "created" when this call stored it,
   * "exists" when an object was already there (it is left as it was, whatever its bytes). Atomic
   * like `put`. A call that rejects may or may not have created the object, so a retry can answer
   * "exists" for the caller's own earlier bytes: a caller that must tell those apart from someone
   * else's reads the object back and compares (the tier does, ./segment-ship.ts).
   *
   * How strictly "only if absent" holds is the backend's `createOnly`.
   */
  putIfAbsent(key: string, body: Uint8Array): Promise<PutIfAbsentResult>;

  /**
   * What `putIfAbsent` guarantees on this backend:
   * - "enforced": the check and the write are one atomic step (an exclusive `link()` on a file
   *   system, `If-None-Match: *` honoured by the S3 server): of concurrent calls for one key,
   *   exactly one answers "created", and no call ever replaces an existing object.
   * - "best-effort": the backend cannot refuse a write that would replace an object (s3rver 3.7
   *   ignores `If-None-Match`), so `putIfAbsent` checks for the object first (HEAD) and then puts.
   *   A call made after an object is there answers "exists" and changes nothing, but two calls
   *   racing within one round trip may both answer "created", and the later write wins.
   */
  readonly createOnly: CreateOnly;

  /**
   * Reads an object, or `undefined` when there is none. With `range`, resolves to exactly the
   * bytes `[offset, offset + length)`, shorter only when the object ends earlier (empty when
   * `offset` is at or past its end). The returned array belongs to the caller.
   */
  get(key: string, range?: ByteRange): Promise<Uint8Array | undefined>;

  /** The size of an object in bytes, or `undefined` when there is none. */
  head(key: string): Promise<{ size: number } | undefined>;

  /**
   * Yields the objects whose key starts with `prefix` (a plain string prefix, not necessarily a
   * whole segment; `""` lists everything) in lexicographic key order. Results are fetched a page
   * at a time, so memory stays bounded however many objects there are. Objects put or deleted
   * while the listing runs may or may not appear.
   */
  list(prefix: string): AsyncIterable<ObjectInfo>;

  /** Removes an object. Deleting a key that does not exist is not an error. */
  delete(key: string): Promise<void>;

  /** Releases the backend's resources. Idempotent; later calls reject with `CLOSED`. */
  close(): Promise<void>;
}

/** S3's own limit on key length; the directory backend keeps to it too so data can move between them. */
export const OBJECT_KEY_BYTES_MAX = 1024;

const SEGMENT_RE = /^[-_=.a-zA-Z0-9]+$/;
const PREFIX_CHARS_RE = /^[-_=.a-zA-Z0-9/]*$/;

/** Whether `segment` can be one `/`-separated part of a key. Exported for backends that walk names. */
export function isKeySegment(segment: string): boolean {
  return SEGMENT_RE.test(segment) && segment !== "." && segment !== "..";
}

const KEY_RULES = "keys are relative paths of [-_=.a-zA-Z0-9] segments separated by single '/', " +
  `with no '.' or '..' segment, at most ${OBJECT_KEY_BYTES_MAX} bytes`;

/** A value as shown in an error message: quoted, and cut short if long. */
function shown(value: unknown): string {
  let text: string;
  try {
    text = JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value); // a bigint, or an object with a cycle
  }
  return text.length > 120 ? `${text.slice(0, 120)}…(${text.length} characters)` : text;
}

export function isObjectKey(key: unknown): key is string {
  return typeof key === "string" && key.length > 0 && key.length <= OBJECT_KEY_BYTES_MAX &&
    key.split("/").every(isKeySegment);
}

export function validateKey(key: unknown): asserts key is string {
  if (!isObjectKey(key)) {
    throw new StrataError("INVALID_ARGUMENT", `invalid object key ${shown(key)}: ${KEY_RULES}`);
  }
}

/** A list prefix is any leading part of a valid key (so it may end in `/` or mid-segment), or `""`. */
export function validatePrefix(prefix: unknown): asserts prefix is string {
  const ok = typeof prefix === "string" && prefix.length <= OBJECT_KEY_BYTES_MAX && PREFIX_CHARS_RE.test(prefix) &&
    prefix.split("/").slice(0, -1).every(isKeySegment);
  if (!ok) {
    throw new StrataError("INVALID_ARGUMENT", `invalid list prefix ${shown(prefix)}: it must be the start of a key; ${KEY_RULES}`);
  }
}

export function validateRange(range: unknown): asserts range is ByteRange | undefined {
  if (range === undefined) return;
  const r = range as Partial<ByteRange> | null;
  const ok = typeof r === "object" && r !== null &&
    Number.isSafeInteger(r.offset) && (r.offset as number) >= 0 &&
    Number.isSafeInteger(r.length) && (r.length as number) >= 0 &&
    Number.isSafeInteger((r.offset as number) + (r.length as number));
  if (!ok) {
    throw new StrataError("INVALID_ARGUMENT", `invalid byte range ${shown(range)}: offset and length must be non-negative integers`);
  }
}

export function validateBody(body: unknown): asserts body is Uint8Array {
  if (!(body instanceof Uint8Array)) {
    throw new StrataError("INVALID_ARGUMENT", "object body must be a Uint8Array");
  }
}

/** The error every backend gives once it is closed. */
export function closedError(backend: string): StrataError {
  return new StrataError("CLOSED", `the ${backend} object store is closed`);
}

// ---------------------------------------------------------------------------------------------
// Tier URLs

export type TierConfig = ({ kind: "dir" } & DirStoreOptions) | ({ kind: "s3" } & S3StoreOptions);

const ACCEPTED_FORMS = 'expected "dir:/path/to/dir" (absolute or relative) or ' +
  '"s3://bucket[/prefix][?endpoint=http://host:port&region=us-east-1&forcePathStyle=true&accessKeyId=…&secretAccessKey=…&createOnly=enforced]"';

const S3_PARAMS = new Set(["endpoint", "region", "forcePathStyle", "accessKeyId", "secretAccessKey", "sessionToken", "createOnly"]);
const SECRET_PARAMS = ["secretAccessKey", "sessionToken"];

// S3's bucket naming rules (lowercase DNS-like labels), so a typo fails here and not on first use.
const BUCKET_RE = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const REGION_RE = /^[a-z0-9-]+$/;

/** Replaces secret query values so a URL can be shown in an error message or a log. */
export function redactTierUrl(url: string): string {
  let out = url;
  for (const name of SECRET_PARAMS) out = out.replace(new RegExp(`([?&]${name}=)[^&#]*`, "g"), "$1***");
  return out;
}

function badUrl(url: string, why: string): StrataError {
  return new StrataError("INVALID_ARGUMENT", `invalid tier URL ${JSON.stringify(redactTierUrl(url))}: ${why}; ${ACCEPTED_FORMS}`);
}

/** Parses `dir:PATH` or `s3://bucket/prefix?…` into the options of a backend. */
export function parseTierUrl(url: string): TierConfig {
  if (typeof url !== "string") throw badUrl(String(url), "not a string");
  if (url.startsWith("dir:")) {
    const path = url.slice("dir:".length);
    if (path.length === 0) throw badUrl(url, "the directory path is empty");
    if (path.includes("\0")) throw badUrl(url, "the directory path contains a NUL byte");
    return { kind: "dir", path };
  }
  if (url.startsWith("s3://")) return parseS3Url(url);
  throw badUrl(url, "unknown scheme");
}

function parseS3Url(url: string): TierConfig {
  // Parsed by hand rather than with `URL`, which would quietly normalise "a/../b" and "%41".
  const rest = url.slice("s3://".length);
  if (rest.includes("#")) throw badUrl(url, "a #fragment is not allowed (percent-encode a '#' in a value as %23)");
  const queryAt = rest.indexOf("?");
  const location = queryAt < 0 ? rest : rest.slice(0, queryAt);
  const query = queryAt < 0 ? "" : rest.slice(queryAt + 1);
  const slashAt = location.indexOf("/");
  const bucket = slashAt < 0 ? location : location.slice(0, slashAt);
  const path = slashAt < 0 ? "" : location.slice(slashAt + 1);

  if (bucket.includes("@")) throw badUrl(url, "credentials go in accessKeyId/secretAccessKey query parameters, not before the bucket");
  if (bucket.includes(":")) throw badUrl(url, "the part after s3:// is a bucket name, not a host:port (use ?endpoint=)");
  if (!BUCKET_RE.test(bucket)) throw badUrl(url, `bad bucket name ${JSON.stringify(bucket)} (3-63 characters of a-z, 0-9, '.', '-')`);

  const prefix = path.replace(/\/+$/, "");
  if (prefix !== "") {
    try {
      validateKey(prefix);
    } catch {
      throw badUrl(url, `bad prefix ${JSON.stringify(prefix)}`);
    }
  }

  const params = new Map<string, string>();
  for (const [name, value] of splitQuery(url, query)) {
    if (!S3_PARAMS.has(name)) throw badUrl(url, `unknown parameter "${name}" (known: ${[...S3_PARAMS].join(", ")})`);
    if (params.has(name)) throw badUrl(url, `parameter "${name}" given twice`);
    params.set(name, value);
  }

  const endpoint = params.get("endpoint");
  if (endpoint !== undefined) {
    let ep: URL | undefined;
    try {
      ep = new URL(endpoint);
    } catch {
      ep = undefined;
    }
    if (ep === undefined || (ep.protocol !== "http:" && ep.protocol !== "https:")) {
      throw badUrl(url, `endpoint ${JSON.stringify(endpoint)} is not an http:// or https:// URL`);
    }
  }
  const region = params.get("region");
  if (region !== undefined && !REGION_RE.test(region)) throw badUrl(url, `bad region ${JSON.stringify(region)}`);

  let forcePathStyle: boolean | undefined;
  const fps = params.get("forcePathStyle");
  if (fps !== undefined) {
    if (fps !== "true" && fps !== "false") throw badUrl(url, "forcePathStyle must be true or false");
    forcePathStyle = fps === "true";
  }

  const createOnly = params.get("createOnly");
  if (createOnly !== undefined && createOnly !== "enforced" && createOnly !== "best-effort") {
    throw badUrl(url, "createOnly must be enforced (the server honours If-None-Match) or best-effort");
  }

  const accessKeyId = params.get("accessKeyId");
  const secretAccessKey = params.get("secretAccessKey");
  const sessionToken = params.get("sessionToken");
  if ((accessKeyId === undefined) !== (secretAccessKey === undefined)) {
    throw badUrl(url, "accessKeyId and secretAccessKey must be given together");
  }
  if (sessionToken !== undefined && accessKeyId === undefined) throw badUrl(url, "sessionToken needs accessKeyId and secretAccessKey");

  const config: { kind: "s3" } & S3StoreOptions = { kind: "s3", bucket, prefix };
  if (endpoint !== undefined) config.endpoint = endpoint;
  if (region !== undefined) config.region = region;
  if (forcePathStyle !== undefined) config.forcePathStyle = forcePathStyle;
  if (createOnly !== undefined) config.createOnly = createOnly;
  if (accessKeyId !== undefined && secretAccessKey !== undefined) {
    config.credentials = sessionToken === undefined
      ? { accessKeyId, secretAccessKey }
      : { accessKeyId, secretAccessKey, sessionToken };
  }
  return config;
}

/**
 * Splits `a=1&b=2` with `decodeURIComponent`, not `URLSearchParams`, which would turn the `+`
 * common in AWS secret keys into a space.
 */
function splitQuery(url: string, query: string): Array<[string, string]> {
  if (query === "") return [];
  return query.split("&").map((pair) => {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw badUrl(url, `query parameter ${JSON.stringify(pair)} is not name=value`);
    try {
      return [decodeURIComponent(pair.slice(0, eq)), decodeURIComponent(pair.slice(eq + 1))];
    } catch {
      throw badUrl(url, `query parameter ${JSON.stringify(pair.slice(0, eq))} is not properly percent-encoded`);
    }
  });
}

/** Opens the backend a tier URL or config names. Nothing is contacted until the first call. */
export function openObjectStore(configOrUrl: TierConfig | string): ObjectStore {
  const config = typeof configOrUrl === "string" ? parseTierUrl(configOrUrl) : configOrUrl;
  switch (config.kind) {
    case "dir": {
      const { kind: _kind, ...options } = config;
      return new DirObjectStore(options);
    }
    case "s3": {
      const { kind: _kind, ...options } = config;
      return new S3ObjectStore(options);
    }
    default:
      throw new StrataError("INVALID_ARGUMENT", `unknown tier kind ${JSON.stringify((config as { kind: unknown }).kind)}; ${ACCEPTED_FORMS}`);
  }
}

/**
 * Validation at the public edge (Store methods, wire handlers, CLI flags). Everything inside the
 * engine trusts what passed through here and only asserts. Each check throws a StrataError whose
 * message says what was wrong and what is accepted instead; nothing is written before all checks
 * of a request have passed.
 */
import { StrataError } from "./errors.js";
import { seqMax, type Limits } from "./limits.js";
import type { AckMode, Headers, Kind, LocationLimits, Message } from "./types.js";

const LOCATION_SEGMENT = /^[-_=a-zA-Z0-9]+$/;
const KEY = /^[-/_=.a-zA-Z0-9]+$/;

export function validateLocation(location: unknown, limits: Limits): string {
  if (typeof location !== "string" || location.length === 0) {
    throw new StrataError("INVALID_LOCATION", "location must be a non-empty string such as \"acct/alice/chat\"");
  }
  const bytes = Buffer.byteLength(location);
  if (bytes > limits.locationBytesMax) {
    throw new StrataError("INVALID_LOCATION", `location is ${bytes} bytes; at most ${limits.locationBytesMax} are allowed`);
  }
  const segments = location.split("/");
  if (segments.length > limits.locationSegmentsMax) {
    throw new StrataError(
      "INVALID_LOCATION",
      `location "${location}" has ${segments.length} segments; at most ${limits.locationSegmentsMax} are allowed`,
    );
  }
  for (const segment of segments) {
    if (!LOCATION_SEGMENT.test(segment)) {
      throw new StrataError(
        "INVALID_LOCATION",
        `location "${location}" is not valid: each "/"-separated segment must be non-empty and match [-_=a-zA-Z0-9]+`,
      );
    }
  }
  return location;
}

export function validateKey(key: unknown, limits: Limits): string {
  if (typeof key !== "string" || key.length === 0) {
    throw new StrataError("INVALID_KEY", "a kv key must be a non-empty string of [-/_=.a-zA-Z0-9]");
  }
  const bytes = Buffer.byteLength(key);
  if (bytes > limits.keyBytesMax) {
    throw new StrataError("INVALID_KEY", `key is ${bytes} bytes; at most ${limits.keyBytesMax} are allowed`);
  }
  if (!KEY.test(key)) {
    throw new StrataError("INVALID_KEY", `key "${key.slice(0, 64)}" is not valid: use 1..${limits.keyBytesMax} bytes of [-/_=.a-zA-Z0-9]`);
  }
  return key;
}

/** A stream seq: an integer in 1..seqMax (see limits.ts for why the bound is far inside 2^53). */
export function validateSeq(seq: unknown, name = "seq"): number {
  if (typeof seq !== "number" || !Number.isSafeInteger(seq) || seq < 1 || seq > seqMax) {
    throw new StrataError("INVALID_ARGUMENT", `${name} must be an integer in 1..${seqMax} (seqMax), got ${describeValue(seq)}`);
  }
  return seq;
}

/**
 * A seq or revision where 0 means "none" or "from the start": endSeq, expectedLastSeq,
 * expectedRevision, a change feed's `after`. An integer in 0..seqMax.
 */
export function validateSeqOrZero(value: unknown, name: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0 || value > seqMax) {
    throw new StrataError("INVALID_ARGUMENT", `${name} must be an integer in 0..${seqMax} (seqMax), got ${describeValue(value)}`);
  }
  return value;
}

export function validateNonNegativeInt(value: unknown, name: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new StrataError("INVALID_ARGUMENT", `${name} must be an integer >= 0, got ${describeValue(value)}`);
  }
  return value;
}

export function validateValue(value: unknown, limits: Limits, name = "value"): Uint8Array {
  if (value === undefined) return new Uint8Array(0);
  if (!(value instanceof Uint8Array)) {
    throw new StrataError("INVALID_ARGUMENT", `${name} must be a Uint8Array (or Buffer), got ${describeValue(value)}`);
  }
  if (value.byteLength > limits.valueBytesMax) {
    throw new StrataError(
      "TOO_LARGE",
      `${name} is ${value.byteLength} bytes; the limit valueBytesMax is ${limits.valueBytesMax} (raise it in the configuration if needed)`,
    );
  }
  return value;
}

export function validateHeaders(headers: unknown, limits: Limits): Headers | undefined {
  if (headers === undefined) return undefined;
  if (headers === null || typeof headers !== "object" || Array.isArray(headers)) {
    throw new StrataError("INVALID_ARGUMENT", "headers must be an object of string names to string values");
  }
  const entries = Object.entries(headers as Record<string, unknown>);
  if (entries.length > limits.headersCountMax) {
    throw new StrataError("TOO_LARGE", `${entries.length} headers given; at most ${limits.headersCountMax} are allowed`);
  }
  let bytes = 0;
  const out: Headers = {};
  for (const [name, value] of entries) {
    if (name.length === 0 || typeof value !== "string") {
      throw new StrataError("INVALID_ARGUMENT", `header "${name}" must have a non-empty name and a string value`);
    }
    bytes += Buffer.byteLength(name) + Buffer.byteLength(value);
    out[name] = value;
  }
  if (bytes > limits.headersBytesMax) {
    throw new StrataError("TOO_LARGE", `headers are ${bytes} bytes; the limit headersBytesMax is ${limits.headersBytesMax}`);
  }
  return entries.length === 0 ? undefined : out;
}

export function validateTimestamp(timestamp: unknown): number | undefined {
  if (timestamp === undefined) return undefined;
  if (typeof timestamp !== "number" || !Number.isSafeInteger(timestamp) || timestamp < 0) {
    throw new StrataError("INVALID_ARGUMENT", `timestamp must be milliseconds since the epoch (integer >= 0), got ${describeValue(timestamp)}`);
  }
  return timestamp;
}

export interface ValidMessage {
  value: Uint8Array;
  headers?: Headers;
  timestamp?: number;
}

export function validateMessage(message: unknown, limits: Limits): ValidMessage {
  if (message === null || typeof message !== "object" || Array.isArray(message) || message instanceof Uint8Array) {
    throw new StrataError("INVALID_ARGUMENT", "message must be an object { value?, headers?, timestamp? }");
  }
  const m = message as Message;
  const out: ValidMessage = { value: validateValue(m.value, limits) };
  const headers = validateHeaders(m.headers, limits);
  if (headers !== undefined) out.headers = headers;
  const timestamp = validateTimestamp(m.timestamp);
  if (timestamp !== undefined) out.timestamp = timestamp;
  return out;
}

export function validateOptionsObject(options: unknown, allowed: readonly string[], what: string): Record<string, unknown> {
  if (options === undefined) return {};
  if (options === null || typeof options !== "object" || Array.isArray(options)) {
    throw new StrataError("INVALID_ARGUMENT", `${what} options must be an object`);
  }
  for (const name of Object.keys(options)) {
    if (!allowed.includes(name)) {
      throw new StrataError("INVALID_ARGUMENT", `unknown ${what} option "${name}"; allowed: ${allowed.join(", ")}`);
    }
  }
  return options as Record<string, unknown>;
}

export function validateAck(ack: unknown): AckMode {
  if (ack === undefined) return "local";
  if (ack !== "local" && ack !== "object") {
    throw new StrataError("INVALID_ARGUMENT", `ack must be "local" or "object", got ${describeValue(ack)}`);
  }
  return ack;
}

export function validateMsgId(msgId: unknown, limits: Limits): string | undefined {
  if (msgId === undefined) return undefined;
  if (typeof msgId !== "string" || msgId.length === 0) {
    throw new StrataError("INVALID_ARGUMENT", "msgId must be a non-empty string");
  }
  if (Buffer.byteLength(msgId) > limits.msgIdBytesMax) {
    throw new StrataError("TOO_LARGE", `msgId is longer than msgIdBytesMax (${limits.msgIdBytesMax} bytes)`);
  }
  return msgId;
}

export function validateTtl(ttlMs: unknown, limits: Limits): number | undefined {
  if (ttlMs === undefined) return undefined;
  if (typeof ttlMs !== "number" || !Number.isSafeInteger(ttlMs) || ttlMs < 1 || ttlMs > limits.ttlMsMax) {
    throw new StrataError("INVALID_ARGUMENT", `ttlMs must be an integer in 1..${limits.ttlMsMax}, got ${describeValue(ttlMs)}`);
  }
  return ttlMs;
}

/** Every field of LocationLimits, in the order a normalised configuration lists them. */
export const LOCATION_LIMIT_FIELDS = ["maxMsgs", "maxBytes", "maxAgeMs", "maxMsgBytes", "discard", "dedupWindowMs", "denyDelete", "ttlMs"] as const;
const STREAM_ONLY = new Set(["maxAgeMs", "dedupWindowMs"]);
const KV_ONLY = new Set(["ttlMs"]);

/** Upper bounds of a configuration's numbers; absent (a decoded log record): only safe integers. */
export interface LocationLimitCaps {
  maxMsgs: number;
  maxBytes: number;
  maxAgeMs: number;
  maxMsgBytes: number;
  dedupWindowMs: number;
  ttlMs: number;
}

export function locationLimitCaps(limits: Limits): LocationLimitCaps {
  return {
    maxMsgs: seqMax,
    maxBytes: Number.MAX_SAFE_INTEGER,
    maxAgeMs: limits.configAgeMsMax,
    maxMsgBytes: limits.valueBytesMax,
    dedupWindowMs: limits.configDedupWindowMsMax,
    ttlMs: limits.ttlMsMax,
  };
}

/**
 * A location configuration checked and normalised (fields in LOCATION_LIMIT_FIELDS order, absent
 * and `denyDelete: false` left out), or what is wrong with it. Pure: the edge (`validateLocationLimits`,
 * INVALID_ARGUMENT) and the log record decoder (CORRUPT) share it.
 */
export function checkLocationLimits(value: unknown, kind: Kind, caps?: LocationLimitCaps): { limits: LocationLimits } | { problem: string } {
  if (value === null || typeof value !== "object" || Array.isArray(value) || value instanceof Uint8Array) {
    return { problem: `limits must be an object such as { maxMsgs: 1000 } (fields: ${LOCATION_LIMIT_FIELDS.join(", ")})` };
  }
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return { problem: "limits must be a plain object" };
  const v = value as Record<string, unknown>;
  for (const name of Object.keys(v)) {
    if (!(LOCATION_LIMIT_FIELDS as readonly string[]).includes(name)) {
      return { problem: `unknown limit "${name.slice(0, 40)}"; the fields are ${LOCATION_LIMIT_FIELDS.join(", ")}` };
    }
    if (v[name] === undefined) continue;
    if (kind === "kv" && STREAM_ONLY.has(name)) return { problem: `${name} applies to streams only; leave it out for a kv` };
    if (kind === "stream" && KV_ONLY.has(name)) return { problem: `${name} applies to kv locations only; give each append its own expiry by other means or leave it out` };
  }
  const out: LocationLimits = {};
  for (const name of LOCATION_LIMIT_FIELDS) {
    const x = v[name];
    if (x === undefined) continue;
    if (name === "discard") {
      if (x !== "old" && x !== "new") return { problem: `discard must be "old" or "new", got ${describeValue(x)}` };
      if (kind === "kv" && x === "old") return { problem: 'discard "old" applies to streams only; a kv refuses writes past its limits (discard "new")' };
      out.discard = x;
      continue;
    }
    if (name === "denyDelete") {
      if (typeof x !== "boolean") return { problem: `denyDelete must be true or false, got ${describeValue(x)}` };
      if (x) out.denyDelete = true;
      continue;
    }
    const min = name === "dedupWindowMs" ? 0 : 1;
    const max = caps ? caps[name] : Number.MAX_SAFE_INTEGER;
    if (typeof x !== "number" || !Number.isSafeInteger(x) || x < min || x > max) {
      return { problem: `${name} must be an integer in ${min}..${max}, got ${describeValue(x)}; leave it out for no limit` };
    }
    out[name] = x;
  }
  if (out.maxMsgBytes !== undefined && out.maxBytes !== undefined && out.maxMsgBytes > out.maxBytes) {
    return { problem: `maxMsgBytes (${out.maxMsgBytes}) is larger than maxBytes (${out.maxBytes}): no value that large could be stored; lower maxMsgBytes or raise maxBytes` };
  }
  return { limits: out };
}

/** A caller's location configuration, normalised; INVALID_ARGUMENT says what to change. */
export function validateLocationLimits(value: unknown, kind: Kind, limits: Limits): LocationLimits {
  const checked = checkLocationLimits(value, kind, locationLimitCaps(limits));
  if ("problem" in checked) throw new StrataError("INVALID_ARGUMENT", `bad ${kind} limits: ${checked.problem}`);
  return checked.limits;
}

export function validateArray(items: unknown, limits: Limits, what: string): unknown[] {
  if (!Array.isArray(items)) throw new StrataError("INVALID_ARGUMENT", `${what} takes an array`);
  if (items.length > limits.manyItemsMax) {
    throw new StrataError("TOO_LARGE", `${what} got ${items.length} items; at most manyItemsMax=${limits.manyItemsMax} per call`);
  }
  return items;
}

/**
 * An untrusted value for an error message. Never calls anything on it: a decoded CBOR map may own
 * `toString` or `valueOf`, and a bigint has no JSON form.
 */
export function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (typeof value === "string") return JSON.stringify(value.slice(0, 40));
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "undefined") return String(value);
  if (typeof value === "bigint") return `${value < 0n ? "a negative" : "a"} bigint`;
  if (value instanceof Uint8Array) return `${value.constructor.name}(${value.byteLength})`;
  return Array.isArray(value) ? "an array" : typeof value;
}

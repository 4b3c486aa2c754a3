/**
 * The coordinator's wire contract: its subjects, the shape of every body it reads or writes, and
 * the parsers that turn untrusted bytes into checked values (or a StrataError with a stable code).
 *
 * Everything that arrives from NATS passes through a `parse…` function here exactly once; the
 * coordinator's logic after that trusts its input and only asserts. Bodies are CBOR (cbor-x);
 * errors travel as a reply with an empty body and the headers `Strata-Error: <CODE>` and
 * `Strata-Message: <text>`, the same convention as the persistence servers.
 *
 * Subjects (P = prefix, default "strata"):
 * - `P.coord.locate`    request `{ location }` → `{ server }` or an error reply
 * - `P.coord.servers`   request (empty body)  → `{ servers: ServerView[] }` for operators
 * - `P.coord.heartbeat` publish `{ id, startedAt, load: { locations?, bytes? } }` from each server
 *
 * It lives in wire/ because both sides speak it: the coordinator (coord/) and each server's
 * heartbeat (server/heartbeat.ts); neither imports the other.
 */
import type { Msg, MsgHdrs } from "nats";
import { StrataError } from "../../errors.js";
import { DEFAULT_LIMITS } from "../../limits.js";
import { validateLocation } from "../../validate.js";
import { DEFAULT_PREFIX, heartbeatSubject, locateSubject, validatePrefix, validateServerId } from "./subjects.js";
import { decodeUntrusted, encode, isPlainMap } from "./wire-codec.js";
import { ERROR_HEADER, MESSAGE_HEADER, errorHeaders } from "./wire-errors.js";

export { DEFAULT_PREFIX, ERROR_HEADER, MESSAGE_HEADER, validatePrefix, validateServerId };

/**
 * Set on an UNAVAILABLE locate reply when the location is assigned to a server that is down, so
 * an operator tool (or a later client) can name the server without parsing the message text.
 */
export const SERVER_HEADER = "Strata-Server";
/** Longest extra header value we send; a header line must stay small and single-line. */
const HEADER_VALUE_CHARS_MAX = 1000;

export interface CoordSubjects {
  locate: string;
  servers: string;
  heartbeat: string;
}

export function coordSubjects(prefix: string): CoordSubjects {
  return { locate: locateSubject(prefix), servers: `${prefix}.coord.servers`, heartbeat: heartbeatSubject(prefix) };
}

export interface ServerLoad {
  locations?: number;
  bytes?: number;
}

export interface HeartbeatBody {
  id: string;
  /** When the server process started, ms since the epoch; a change means it restarted. */
  startedAt: number;
  load: ServerLoad;
}

export interface LocateReply {
  server: string;
}

/** One server as `P.coord.servers` reports it. */
export interface ServerView {
  id: string;
  live: boolean;
  /** Locations the coordinator has assigned to this server. */
  assigned: number;
  startedAt: number;
  firstSeenAt: number;
  /** Wall-clock time of the last heartbeat this coordinator has recorded. */
  lastHeartbeatAt: number;
  /** What the server last reported about itself. */
  load: ServerLoad;
}

export interface ServersReply {
  servers: ServerView[];
}

/** Decodes a CBOR body; anything that is not one well-formed CBOR item is INVALID_ARGUMENT. */
export function decodeBody(data: Uint8Array, what: string): unknown {
  return decodeUntrusted(data, what);
}

export function encodeBody(value: unknown): Uint8Array {
  return encode(value);
}

export function parseLocateRequest(body: unknown): string {
  const obj = asObject(body, "locate request", "{ location: \"acct/alice/chat\" }");
  // Unknown fields are ignored so that later clients may send hints to older coordinators.
  return validateLocation(obj.location, DEFAULT_LIMITS);
}

export function parseHeartbeat(body: unknown): HeartbeatBody {
  const obj = asObject(body, "heartbeat", "{ id, startedAt, load }");
  const id = validateServerId(obj.id);
  const startedAt = nonNegativeInt(obj.startedAt, "heartbeat startedAt");
  const load: ServerLoad = {};
  if (obj.load !== undefined && obj.load !== null) {
    const l = asObject(obj.load, "heartbeat load", "{ locations?, bytes? }");
    if (l.locations !== undefined) load.locations = nonNegativeInt(l.locations, "heartbeat load.locations");
    if (l.bytes !== undefined) load.bytes = nonNegativeInt(l.bytes, "heartbeat load.bytes");
  }
  return { id, startedAt, load };
}

export function parseLocateReply(body: unknown): LocateReply {
  const obj = asObject(body, "locate reply", "{ server }");
  return { server: validateServerId(obj.server) };
}

/** Replies to `msg` with an error; a request without a reply subject (a bare publish) is dropped. */
export function respondError(msg: Msg, err: unknown, extraHeaders: Record<string, string> = {}): void {
  if (!msg.reply) return;
  const h = errorHeaders(err);
  for (const [name, value] of Object.entries(extraHeaders)) h.set(name, headerSafe(value));
  safeRespond(msg, new Uint8Array(0), h);
}

export function respondBody(msg: Msg, value: unknown): void {
  if (!msg.reply) return;
  safeRespond(msg, encodeBody(value), undefined);
}

function safeRespond(msg: Msg, data: Uint8Array, h: MsgHdrs | undefined): void {
  try {
    msg.respond(data, h === undefined ? undefined : { headers: h });
  } catch {
    // The connection is closing or closed; the requester will time out and retry elsewhere.
  }
}

function headerSafe(text: string): string {
  return text.replace(/[\r\n]+/g, " ").slice(0, HEADER_VALUE_CHARS_MAX);
}

function asObject(value: unknown, what: string, shape: string): Record<string, unknown> {
  if (!isPlainMap(value)) {
    throw new StrataError("INVALID_ARGUMENT", `${what} must be a CBOR map ${shape}; got ${describe(value)}`);
  }
  return value as Record<string, unknown>;
}

function nonNegativeInt(value: unknown, name: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new StrataError("INVALID_ARGUMENT", `${name} must be an integer >= 0; got ${describe(value)}`);
  }
  return value;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (typeof value === "string") return JSON.stringify(value.slice(0, 64));
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "undefined") return String(value);
  if (value instanceof Uint8Array) return `bytes(${value.byteLength})`;
  return Array.isArray(value) ? "an array" : typeof value;
}

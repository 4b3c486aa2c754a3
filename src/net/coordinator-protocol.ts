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
 */
import { decode, encode } from "cbor-x";
import { headers as natsHeaders, type Msg, type MsgHdrs } from "nats";
import { StrataError, isErrorCode } from "../errors.js";
import { DEFAULT_LIMITS } from "../limits.js";
import { validateLocation } from "../validate.js";

export const DEFAULT_PREFIX = "strata";
export const ERROR_HEADER = "Strata-Error";
export const MESSAGE_HEADER = "Strata-Message";
/**
 * Set on an UNAVAILABLE locate reply when the location is assigned to a server that is down, so
 * an operator tool (or a later client) can name the server without parsing the message text.
 */
export const SERVER_HEADER = "Strata-Server";

/**
 * A server id becomes a subject token (`P.w.<id>.>`), so it must never contain `.`, `*`, `>` or
 * whitespace. This is the same rule `Store.open` applies to its `id` (src/config.ts).
 */
const SERVER_ID = /^[-_a-zA-Z0-9]{1,64}$/;
/** A prefix is one or more subject tokens, e.g. "strata" or "prod.strata". */
const PREFIX = /^[-_a-zA-Z0-9]+(\.[-_a-zA-Z0-9]+)*$/;
/** Longest Strata-Message header we send; a header line must stay small and single-line. */
const MESSAGE_HEADER_CHARS_MAX = 1000;

export interface CoordSubjects {
  locate: string;
  servers: string;
  heartbeat: string;
}

export function validatePrefix(prefix: unknown): string {
  if (typeof prefix !== "string" || !PREFIX.test(prefix) || prefix.length > 128) {
    throw new StrataError("INVALID_ARGUMENT", `prefix must be subject tokens of [-_a-zA-Z0-9] joined by ".", such as "strata"; got ${JSON.stringify(prefix)}`);
  }
  return prefix;
}

export function coordSubjects(prefix: string): CoordSubjects {
  return { locate: `${prefix}.coord.locate`, servers: `${prefix}.coord.servers`, heartbeat: `${prefix}.coord.heartbeat` };
}

export function validateServerId(id: unknown): string {
  if (typeof id !== "string" || !SERVER_ID.test(id)) {
    throw new StrataError("INVALID_ARGUMENT", `server id must be 1..64 characters of [-_a-zA-Z0-9]; got ${describe(id)}`);
  }
  return id;
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
  if (data.byteLength === 0) throw new StrataError("INVALID_ARGUMENT", `${what} needs a CBOR body; got an empty message`);
  try {
    return decode(data);
  } catch (cause) {
    throw new StrataError("INVALID_ARGUMENT", `${what} body is not valid CBOR (${(cause as Error).message})`, { cause });
  }
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
  const e = StrataError.is(err) ? err : new StrataError("INTERNAL", `coordinator error: ${(err as Error)?.message ?? String(err)}`);
  const h = natsHeaders();
  h.set(ERROR_HEADER, e.code);
  h.set(MESSAGE_HEADER, headerSafe(e.message));
  for (const [name, value] of Object.entries(extraHeaders)) h.set(name, headerSafe(value));
  safeRespond(msg, new Uint8Array(0), h);
}

export function respondBody(msg: Msg, value: unknown): void {
  if (!msg.reply) return;
  safeRespond(msg, encodeBody(value), undefined);
}

/** Turns an error reply back into a StrataError (undefined when the reply is not an error). */
export function errorFromReply(h: MsgHdrs | undefined): StrataError | undefined {
  const code = h?.get(ERROR_HEADER);
  if (!code) return undefined;
  const message = h?.get(MESSAGE_HEADER) ?? "";
  return new StrataError(isErrorCode(code) ? code : "INTERNAL", message || `error ${code}`);
}

function safeRespond(msg: Msg, data: Uint8Array, h: MsgHdrs | undefined): void {
  try {
    msg.respond(data, h === undefined ? undefined : { headers: h });
  } catch {
    // The connection is closing or closed; the requester will time out and retry elsewhere.
  }
}

function headerSafe(text: string): string {
  return text.replace(/[\r\n]+/g, " ").slice(0, MESSAGE_HEADER_CHARS_MAX);
}

function asObject(value: unknown, what: string, shape: string): Record<string, unknown> {
  if (value === null || typeof value !== "object" || Array.isArray(value) || value instanceof Uint8Array || value instanceof Map) {
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

/**
 * The coordinator's wire contract (docs/failover.md, "Subjects"): its subjects, the shape of every
 * body it reads or writes, and the parsers that turn untrusted bytes into checked values (or a
 * StrataError with a stable code).
 *
 * Everything that arrives from NATS passes through a `parse…` function here exactly once; the logic
 * after that trusts its input and only asserts. Both sides parse with the same functions: the
 * coordinator its requests and the handover replies, a server (and the operator CLI) the replies.
 * Bodies are CBOR (cbor-x); errors travel as a reply with an empty body and the headers
 * `Strata-Error: <CODE>` and `Strata-Message: <text>` (wire-errors.ts), plus `Strata-Server: <id>`
 * when an UNAVAILABLE answer knows which server holds the location.
 *
 * Subjects (P = prefix, default "strata"); every one is request/reply:
 *   P.coord.register  { id, startedAt, load? }                 → { incarnation, leaseMs, leaseRenewMs, leaseMarginMs }
 *   P.coord.renew     { id, incarnation, load? }               → { ok: true } | FENCED
 *   P.coord.locate    { location }                             → { server, epoch }
 *   P.coord.claim     { id, incarnation, locations }           → { grants: [Grant | Refusal] } (one per distinct location, in order)
 *   P.coord.cut       { id, incarnation, location, epoch, from, cut } → { cut }
 *   P.coord.confirm   { id, incarnation, epochs: [[loc, epoch]] } → { stale: [loc] }
 *   P.coord.release   { id, incarnation, locations? }          → { ok: true }
 *   P.coord.move      { location, to }                         → { server, epoch, from }
 *   P.coord.drain     { server }                               → { moved, locations: [[loc, server]], left }
 *   P.coord.servers   (empty)                                  → { servers: ServerView[] }
 *   P.s.<id>.handover { epochs: [[loc, epoch]] }               → { cuts: [[loc, cut | null]] }   (coordinator → server)
 *
 * Unknown fields are ignored (later versions may add hints); missing or ill-typed ones are
 * INVALID_ARGUMENT, bad locations INVALID_LOCATION. Lists of locations are bounded by
 * `locationsPerRequestMax` and deduplicated (first occurrence kept).
 */
import type { Msg, MsgHdrs } from "nats";
import { StrataError, isErrorCode, type ErrorCode } from "../../errors.js";
import { DEFAULT_COORDINATOR_LIMITS, DEFAULT_LIMITS } from "../../limits.js";
import { describeValue, validateLocation } from "../../validate.js";
import { DEFAULT_PREFIX, locateSubject, validatePrefix, validateServerId } from "./subjects.js";
import { decodeUntrusted, encode, isPlainMap } from "./wire-codec.js";
import { ERROR_HEADER, MESSAGE_HEADER, errorHeaders } from "./wire-errors.js";

export { DEFAULT_PREFIX, ERROR_HEADER, MESSAGE_HEADER, validatePrefix, validateServerId };

/** Set on an UNAVAILABLE reply that knows which server holds (or will hold) the location. */
export const SERVER_HEADER = "Strata-Server";
/** Longest extra header value we send; a header line must stay small and single-line. */
const HEADER_VALUE_CHARS_MAX = 1000;
const LOCATIONS_MAX = DEFAULT_COORDINATOR_LIMITS.locationsPerRequestMax;

export interface CoordSubjects {
  register: string;
  renew: string;
  locate: string;
  claim: string;
  cut: string;
  confirm: string;
  release: string;
  move: string;
  drain: string;
  servers: string;
}

export function coordSubjects(prefix: string): CoordSubjects {
  const c = `${prefix}.coord`;
  return {
    register: `${c}.register`,
    renew: `${c}.renew`,
    locate: locateSubject(prefix),
    claim: `${c}.claim`,
    cut: `${c}.cut`,
    confirm: `${c}.confirm`,
    release: `${c}.release`,
    move: `${c}.move`,
    drain: `${c}.drain`,
    servers: `${c}.servers`,
  };
}

/** Where the coordinator asks server `id` to hand locations over (move, drain). */
export function handoverSubject(prefix: string, id: string): string {
  return `${prefix}.s.${validateServerId(id)}.handover`;
}

// ─── Shapes ───────────────────────────────────────────────────────────────────────────

export interface ServerLoad {
  locations?: number;
  bytes?: number;
}

export interface RegisterRequest {
  id: string;
  /** When the server process started, ms since the epoch (informational; a change means a restart). */
  startedAt: number;
  load: ServerLoad;
}

export interface LeaseTimes {
  leaseMs: number;
  leaseRenewMs: number;
  leaseMarginMs: number;
}

export interface RegisterReply extends LeaseTimes {
  /** This registration's number: coordinator-wide, increasing, durable before the reply. */
  incarnation: number;
}

export interface RenewRequest {
  id: string;
  incarnation: number;
  load: ServerLoad;
}

export interface OkReply {
  ok: true;
}

export interface LocateReply {
  server: string;
  /** The location's epoch now (the next grant bumps it); clients keep the highest seen. */
  epoch: number;
}

export interface ClaimRequest {
  id: string;
  incarnation: number;
  locations: string[];
}

/** Where a takeover reads the location's history: server `from`'s segments up to `cut`. */
export interface Handoff {
  from: string;
  incarnation: number;
  /** Fixed once per handoff; absent until someone proposes it with `P.coord.cut`. */
  cut?: number;
}

export interface Grant {
  location: string;
  epoch: number;
  /** Present only when the history lies with another server id than the claimer's. */
  handoff?: Handoff;
}

export interface Refusal {
  location: string;
  code: ErrorCode;
  message: string;
  /** The server that holds (or will hold) the location, when known. */
  server?: string;
}

export interface ClaimReply {
  grants: Array<Grant | Refusal>;
}

export function isRefusal(g: Grant | Refusal): g is Refusal {
  return "code" in g;
}

export interface CutRequest {
  id: string;
  incarnation: number;
  location: string;
  epoch: number;
  from: string;
  cut: number;
}

export interface CutReply {
  cut: number;
}

export interface ConfirmRequest {
  id: string;
  incarnation: number;
  epochs: Array<[string, number]>;
}

export interface ConfirmReply {
  /** Locations whose epoch is no longer this incarnation's: do not acknowledge their writes. */
  stale: string[];
}

export interface ReleaseRequest {
  id: string;
  incarnation: number;
  /** Absent: the whole lease ends (a stopping server). Present: only these locations are let go. */
  locations?: string[];
}

export interface MoveRequest {
  location: string;
  to: string;
}

export interface MoveReply {
  server: string;
  epoch: number;
  /** The server that held it before (equal to `server` when nothing had to move). */
  from: string;
}

export interface DrainRequest {
  server: string;
}

export interface DrainReply {
  /** How many locations moved away. */
  moved: number;
  /** The first `drainListMax` of them, each with its new server. */
  locations: Array<[string, string]>;
  /** Locations still assigned to the drained server (its holder did not hand them over). */
  left: number;
}

export interface HandoverRequest {
  epochs: Array<[string, number]>;
}

export interface HandoverReply {
  /**
   * One entry per location the server let go: the last segment of its log (sealed and shipped)
   * that holds the location's history, or null when its log holds nothing of it (never imported
   * or written under this epoch), so the next owner reads from the previous source. A location
   * left out was not let go and does not move.
   */
  cuts: Array<[string, number | null]>;
}

/** One server as `P.coord.servers` reports it. */
export interface ServerView {
  id: string;
  /** Its current incarnation's lease holds (as the coordinator counts it). */
  live: boolean;
  incarnation: number;
  lease: "valid" | "over" | "released";
  /** ms until the coordinator considers the lease over (0 when it is). */
  leaseLeftMs: number;
  /** Locations the coordinator has assigned to this server. */
  assigned: number;
  /** Of those, how many are granted to its current incarnation (it holds their epoch). */
  epochsHeld: number;
  /** Set by a drain: new locations are not placed here until the server registers again. */
  draining: boolean;
  startedAt: number;
  firstSeenAt: number;
  registeredAt: number;
  load: ServerLoad;
}

export interface ServersReply {
  servers: ServerView[];
}

// ─── Parsers ──────────────────────────────────────────────────────────────────────────

/** Decodes a CBOR body; anything that is not one well-formed CBOR item is INVALID_ARGUMENT. */
export function decodeBody(data: Uint8Array, what: string): unknown {
  return decodeUntrusted(data, what);
}

export function encodeBody(value: unknown): Uint8Array {
  return encode(value);
}

export function parseLocateRequest(body: unknown): string {
  const obj = asObject(body, "locate request", '{ location: "acct/alice/chat" }');
  return validateLocation(obj.location, DEFAULT_LIMITS);
}

export function parseLocateReply(body: unknown): LocateReply {
  const obj = asObject(body, "locate reply", "{ server, epoch }");
  return { server: validateServerId(obj.server), epoch: nonNegativeInt(obj.epoch, "locate reply epoch") };
}

export function parseRegisterRequest(body: unknown): RegisterRequest {
  const obj = asObject(body, "register request", "{ id, startedAt, load? }");
  return { id: validateServerId(obj.id), startedAt: nonNegativeInt(obj.startedAt, "register startedAt"), load: parseLoad(obj.load) };
}

export function parseRegisterReply(body: unknown): RegisterReply {
  const obj = asObject(body, "register reply", "{ incarnation, leaseMs, leaseRenewMs, leaseMarginMs }");
  const reply = {
    incarnation: incarnation(obj.incarnation),
    leaseMs: positiveInt(obj.leaseMs, "register reply leaseMs"),
    leaseRenewMs: positiveInt(obj.leaseRenewMs, "register reply leaseRenewMs"),
    leaseMarginMs: positiveInt(obj.leaseMarginMs, "register reply leaseMarginMs"),
  };
  if (reply.leaseMarginMs * 2 > reply.leaseMs || reply.leaseRenewMs * 2 > reply.leaseMs - reply.leaseMarginMs) {
    throw new StrataError("INVALID_ARGUMENT", `register reply has inconsistent lease times ${JSON.stringify(reply)}; the coordinator is misconfigured`);
  }
  return reply;
}

export function parseRenewRequest(body: unknown): RenewRequest {
  const obj = asObject(body, "renew request", "{ id, incarnation, load? }");
  return { id: validateServerId(obj.id), incarnation: incarnation(obj.incarnation), load: parseLoad(obj.load) };
}

export function parseOkReply(body: unknown, what: string): OkReply {
  const obj = asObject(body, what, "{ ok: true }");
  if (obj.ok !== true) throw new StrataError("INVALID_ARGUMENT", `${what} must be { ok: true }; got ok = ${describeValue(obj.ok)}`);
  return { ok: true };
}

export function parseClaimRequest(body: unknown, max = LOCATIONS_MAX): ClaimRequest {
  const obj = asObject(body, "claim request", "{ id, incarnation, locations: [..] }");
  return {
    id: validateServerId(obj.id),
    incarnation: incarnation(obj.incarnation),
    locations: locationList(obj.locations, "claim locations", max, false),
  };
}

export function parseClaimReply(body: unknown): ClaimReply {
  const obj = asObject(body, "claim reply", "{ grants: [..] }");
  if (!Array.isArray(obj.grants)) throw new StrataError("INVALID_ARGUMENT", `claim reply grants must be an array; got ${describeValue(obj.grants)}`);
  const grants = obj.grants.map((g): Grant | Refusal => {
    const item = asObject(g, "claim reply grant", "{ location, epoch, handoff? } or { location, code, message, server? }");
    const location = validateLocation(item.location, DEFAULT_LIMITS);
    if (item.code !== undefined) {
      if (!isErrorCode(item.code)) throw new StrataError("INVALID_ARGUMENT", `claim refusal code ${describeValue(item.code)} is not a Strata error code`);
      const refusal: Refusal = { location, code: item.code, message: typeof item.message === "string" ? item.message : "" };
      if (item.server !== undefined) refusal.server = validateServerId(item.server);
      return refusal;
    }
    const grant: Grant = { location, epoch: nonNegativeInt(item.epoch, "grant epoch") };
    if (item.handoff !== undefined) {
      const h = asObject(item.handoff, "grant handoff", "{ from, incarnation, cut? }");
      grant.handoff = { from: validateServerId(h.from), incarnation: incarnation(h.incarnation) };
      if (h.cut !== undefined) grant.handoff.cut = nonNegativeInt(h.cut, "handoff cut");
    }
    return grant;
  });
  return { grants };
}

export function parseCutRequest(body: unknown): CutRequest {
  const obj = asObject(body, "cut request", "{ id, incarnation, location, epoch, from, cut }");
  return {
    id: validateServerId(obj.id),
    incarnation: incarnation(obj.incarnation),
    location: validateLocation(obj.location, DEFAULT_LIMITS),
    epoch: nonNegativeInt(obj.epoch, "cut epoch"),
    from: validateServerId(obj.from),
    cut: nonNegativeInt(obj.cut, "cut"),
  };
}

export function parseCutReply(body: unknown): CutReply {
  return { cut: nonNegativeInt(asObject(body, "cut reply", "{ cut }").cut, "cut reply cut") };
}

export function parseConfirmRequest(body: unknown, max = LOCATIONS_MAX): ConfirmRequest {
  const obj = asObject(body, "confirm request", "{ id, incarnation, epochs: [[location, epoch], ..] }");
  return { id: validateServerId(obj.id), incarnation: incarnation(obj.incarnation), epochs: epochList(obj.epochs, "confirm epochs", max) };
}

export function parseConfirmReply(body: unknown, max = LOCATIONS_MAX): ConfirmReply {
  const obj = asObject(body, "confirm reply", "{ stale: [..] }");
  return { stale: locationList(obj.stale, "confirm reply stale", max, true) };
}

export function parseReleaseRequest(body: unknown, max = LOCATIONS_MAX): ReleaseRequest {
  const obj = asObject(body, "release request", "{ id, incarnation, locations? }");
  const req: ReleaseRequest = { id: validateServerId(obj.id), incarnation: incarnation(obj.incarnation) };
  if (obj.locations !== undefined && obj.locations !== null) req.locations = locationList(obj.locations, "release locations", max, false);
  return req;
}

export function parseMoveRequest(body: unknown): MoveRequest {
  const obj = asObject(body, "move request", "{ location, to }");
  return { location: validateLocation(obj.location, DEFAULT_LIMITS), to: validateServerId(obj.to) };
}

export function parseMoveReply(body: unknown): MoveReply {
  const obj = asObject(body, "move reply", "{ server, epoch, from }");
  return { server: validateServerId(obj.server), epoch: nonNegativeInt(obj.epoch, "move reply epoch"), from: validateServerId(obj.from) };
}

export function parseDrainRequest(body: unknown): DrainRequest {
  return { server: validateServerId(asObject(body, "drain request", "{ server }").server) };
}

export function parseDrainReply(body: unknown): DrainReply {
  const obj = asObject(body, "drain reply", "{ moved, locations, left }");
  if (!Array.isArray(obj.locations)) throw new StrataError("INVALID_ARGUMENT", `drain reply locations must be an array; got ${describeValue(obj.locations)}`);
  return {
    moved: nonNegativeInt(obj.moved, "drain reply moved"),
    locations: obj.locations.map((pair) => {
      if (!Array.isArray(pair) || pair.length !== 2) throw new StrataError("INVALID_ARGUMENT", "drain reply locations must be [location, server] pairs");
      return [validateLocation(pair[0], DEFAULT_LIMITS), validateServerId(pair[1])] as [string, string];
    }),
    left: nonNegativeInt(obj.left, "drain reply left"),
  };
}

export function parseHandoverRequest(body: unknown, max = LOCATIONS_MAX): HandoverRequest {
  const obj = asObject(body, "handover request", "{ epochs: [[location, epoch], ..] }");
  return { epochs: epochList(obj.epochs, "handover epochs", max) };
}

export function parseHandoverReply(body: unknown, max = LOCATIONS_MAX): HandoverReply {
  const obj = asObject(body, "handover reply", "{ cuts: [[location, cut | null], ..] }");
  const list = boundedArray(obj.cuts, "handover reply cuts", max);
  const seen = new Set<string>();
  const cuts: Array<[string, number | null]> = [];
  for (const pair of list) {
    if (!Array.isArray(pair) || pair.length !== 2) throw new StrataError("INVALID_ARGUMENT", "handover reply cuts must be [location, cut | null] pairs");
    const location = validateLocation(pair[0], DEFAULT_LIMITS);
    const cut = pair[1] === null || pair[1] === undefined ? null : nonNegativeInt(pair[1], "handover reply cut");
    if (seen.has(location)) continue;
    seen.add(location);
    cuts.push([location, cut]);
  }
  return { cuts };
}

export function parseServersReply(body: unknown): ServersReply {
  const obj = asObject(body, "servers reply", "{ servers: [..] }");
  if (!Array.isArray(obj.servers)) throw new StrataError("INVALID_ARGUMENT", "servers reply servers must be an array");
  // Operator display only: the entries are shown, never acted upon, so they pass through as sent.
  return { servers: obj.servers as ServerView[] };
}

// ─── Replies ──────────────────────────────────────────────────────────────────────────

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

// ─── Field checks ─────────────────────────────────────────────────────────────────────

function parseLoad(value: unknown): ServerLoad {
  const load: ServerLoad = {};
  if (value === undefined || value === null) return load;
  const l = asObject(value, "load", "{ locations?, bytes? }");
  if (l.locations !== undefined) load.locations = nonNegativeInt(l.locations, "load.locations");
  if (l.bytes !== undefined) load.bytes = nonNegativeInt(l.bytes, "load.bytes");
  return load;
}

function boundedArray(value: unknown, what: string, max: number): unknown[] {
  if (!Array.isArray(value)) throw new StrataError("INVALID_ARGUMENT", `${what} must be an array; got ${describeValue(value)}`);
  if (value.length > max) throw new StrataError("INVALID_ARGUMENT", `${what} has ${value.length} entries; at most ${max} per request (locationsPerRequestMax): split it`);
  return value;
}

function locationList(value: unknown, what: string, max: number, allowEmpty: boolean): string[] {
  const list = boundedArray(value, what, max);
  if (!allowEmpty && list.length === 0) throw new StrataError("INVALID_ARGUMENT", `${what} must name at least one location`);
  return [...new Set(list.map((l) => validateLocation(l, DEFAULT_LIMITS)))];
}

function epochList(value: unknown, what: string, max: number): Array<[string, number]> {
  const list = boundedArray(value, what, max);
  const seen = new Set<string>();
  const out: Array<[string, number]> = [];
  for (const pair of list) {
    if (!Array.isArray(pair) || pair.length !== 2) throw new StrataError("INVALID_ARGUMENT", `${what} must be [location, epoch] pairs; got ${describeValue(pair)}`);
    const location = validateLocation(pair[0], DEFAULT_LIMITS);
    const epoch = nonNegativeInt(pair[1], `${what} epoch`);
    if (seen.has(location)) continue;
    seen.add(location);
    out.push([location, epoch]);
  }
  return out;
}

function asObject(value: unknown, what: string, shape: string): Record<string, unknown> {
  if (!isPlainMap(value)) throw new StrataError("INVALID_ARGUMENT", `${what} must be a CBOR map ${shape}; got ${describeValue(value)}`);
  return value as Record<string, unknown>;
}

function incarnation(value: unknown): number {
  return positiveInt(value, "incarnation");
}

function positiveInt(value: unknown, name: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value <= 0) {
    throw new StrataError("INVALID_ARGUMENT", `${name} must be an integer >= 1; got ${describeValue(value)}`);
  }
  return value;
}

function nonNegativeInt(value: unknown, name: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new StrataError("INVALID_ARGUMENT", `${name} must be an integer >= 0; got ${describeValue(value)}`);
  }
  return value;
}

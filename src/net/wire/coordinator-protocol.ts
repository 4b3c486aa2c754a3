/**
 * The coordinator's wire contract (docs/failover.md, "Subjects"): its subjects, the shape of every
 * body it reads or writes, the body codec and the reply helpers. The parsers that turn untrusted
 * bodies into these shapes (or a StrataError with a stable code) are in coordinator-parsers.ts.
 *
 * Bodies are CBOR (cbor-x); errors travel as a reply with an empty body and the headers
 * `Strata-Error: <CODE>` and `Strata-Message: <text>` (wire-errors.ts), plus `Strata-Server: <id>`
 * when an UNAVAILABLE answer knows which server holds the location.
 *
 * Subjects (P = prefix, default "strata"); every one is request/reply but the grant push:
 *   P.coord.register  { id, startedAt, load?, push? }          → { incarnation, leaseMs, leaseRenewMs, leaseMarginMs, grantKey? }
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
 *   P.s.<id>.grant    { incarnation, key, grants: [[loc, epoch]] }  (coordinator → server, a publish, no reply)
 */
import type { Msg, MsgHdrs } from "nats";
import type { ErrorCode } from "../../errors.js";
import { DEFAULT_PREFIX, locateSubject, validatePrefix, validateServerId } from "./subjects.js";
import { decodeUntrusted, encode } from "./wire-codec.js";
import { ERROR_HEADER, MESSAGE_HEADER, errorHeaders } from "./wire-errors.js";

export { DEFAULT_PREFIX, ERROR_HEADER, MESSAGE_HEADER, validatePrefix, validateServerId };

/** Set on an UNAVAILABLE reply that knows which server holds (or will hold) the location. */
export const SERVER_HEADER = "Strata-Server";
/** Longest extra header value we send; a header line must stay small and single-line. */
const HEADER_VALUE_CHARS_MAX = 1000;

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
  /** The running coordinator answers who it is (./presence.ts): one coordinator per prefix. */
  presence: string;
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
    presence: `${c}.presence`,
  };
}

/** Where the coordinator asks server `id` to hand locations over (move, drain). */
export function handoverSubject(prefix: string, id: string): string {
  return `${prefix}.s.${validateServerId(id)}.handover`;
}

/**
 * Where the coordinator pushes to server `id` the grants it made while locating new locations
 * (docs/failover.md, "Creation"). Only the coordinator may publish here (deploy/ permissions);
 * the body also carries the incarnation's `grantKey`, so a push from anyone else is ignored.
 */
export function grantSubject(prefix: string, id: string): string {
  return `${prefix}.s.${validateServerId(id)}.grant`;
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
  /** The server takes grants pushed on `P.s.<id>.grant` (so locate may grant new locations to it at once). */
  push?: boolean;
}

export interface LeaseTimes {
  leaseMs: number;
  leaseRenewMs: number;
  leaseMarginMs: number;
}

export interface RegisterReply extends LeaseTimes {
  /** This registration's number: coordinator-wide, increasing, durable before the reply. */
  incarnation: number;
  /** Present when the server asked for pushed grants: every push for this incarnation carries it. */
  grantKey?: string;
}

/** A push on `P.s.<id>.grant`: locations granted to incarnation `incarnation`, each with its epoch. */
export interface GrantPush {
  incarnation: number;
  key: string;
  grants: Array<[string, number]>;
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

// ─── Bodies ───────────────────────────────────────────────────────────────────────────

/** Decodes a CBOR body; anything that is not one well-formed CBOR item is INVALID_ARGUMENT. */
export function decodeBody(data: Uint8Array, what: string): unknown {
  return decodeUntrusted(data, what);
}

export function encodeBody(value: unknown): Uint8Array {
  return encode(value);
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

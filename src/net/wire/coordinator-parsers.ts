/**
 * The parsers of the coordinator's bodies (their shapes are in coordinator-protocol.ts): each
 * turns a decoded, untrusted body into a checked value, or throws a StrataError with a stable code.
 *
 * Everything that arrives from NATS passes through a `parse…` function here exactly once; the logic
 * after that trusts its input and only asserts. Both sides parse with the same functions: the
 * coordinator its requests and the handover replies, a server (and the operator CLI) the replies.
 *
 * Unknown fields are ignored (later versions may add hints); missing or ill-typed ones are
 * INVALID_ARGUMENT, bad locations INVALID_LOCATION. Lists of locations are bounded by
 * `locationsPerRequestMax` and deduplicated (first occurrence kept).
 */
import { StrataError, isErrorCode } from "../../errors.js";
import { DEFAULT_COORDINATOR_LIMITS, DEFAULT_LIMITS } from "../../limits.js";
import { describeValue, validateLocation } from "../../validate.js";
import type {
  ClaimReply,
  ClaimRequest,
  ConfirmReply,
  ConfirmRequest,
  CutReply,
  CutRequest,
  DrainReply,
  DrainRequest,
  Grant,
  GrantPush,
  HandoverReply,
  HandoverRequest,
  LocateReply,
  MoveReply,
  MoveRequest,
  OkReply,
  Refusal,
  RegisterReply,
  RegisterRequest,
  ReleaseRequest,
  RenewRequest,
  ServerLoad,
  ServerView,
  ServersReply,
} from "./coordinator-protocol.js";
import { validateServerId } from "./subjects.js";
import { isPlainMap } from "./wire-codec.js";

const LOCATIONS_MAX = DEFAULT_COORDINATOR_LIMITS.locationsPerRequestMax;

export function parseLocateRequest(body: unknown): string {
  const obj = asObject(body, "locate request", '{ location: "acct/alice/chat" }');
  return validateLocation(obj.location, DEFAULT_LIMITS);
}

export function parseLocateReply(body: unknown): LocateReply {
  const obj = asObject(body, "locate reply", "{ server, epoch }");
  return { server: validateServerId(obj.server), epoch: nonNegativeInt(obj.epoch, "locate reply epoch") };
}

export function parseRegisterRequest(body: unknown): RegisterRequest {
  const obj = asObject(body, "register request", "{ id, startedAt, load?, push? }");
  return { id: validateServerId(obj.id), startedAt: nonNegativeInt(obj.startedAt, "register startedAt"), load: parseLoad(obj.load), push: obj.push === true };
}

export function parseRegisterReply(body: unknown): RegisterReply {
  const obj = asObject(body, "register reply", "{ incarnation, leaseMs, leaseRenewMs, leaseMarginMs }");
  const reply: RegisterReply = {
    incarnation: incarnation(obj.incarnation),
    leaseMs: positiveInt(obj.leaseMs, "register reply leaseMs"),
    leaseRenewMs: positiveInt(obj.leaseRenewMs, "register reply leaseRenewMs"),
    leaseMarginMs: positiveInt(obj.leaseMarginMs, "register reply leaseMarginMs"),
  };
  if (obj.grantKey !== undefined) reply.grantKey = grantKey(obj.grantKey, "register reply grantKey");
  if (reply.leaseMarginMs * 2 > reply.leaseMs || reply.leaseRenewMs * 2 > reply.leaseMs - reply.leaseMarginMs) {
    throw new StrataError("INVALID_ARGUMENT", `register reply has inconsistent lease times ${JSON.stringify(reply)}; the coordinator is misconfigured`);
  }
  return reply;
}

/** A grant push (`P.s.<id>.grant`); the caller still checks its incarnation and key. */
export function parseGrantPush(body: unknown, max = LOCATIONS_MAX): GrantPush {
  const obj = asObject(body, "grant push", "{ incarnation, key, grants: [[location, epoch], ..] }");
  return { incarnation: incarnation(obj.incarnation), key: grantKey(obj.key, "grant push key"), grants: epochList(obj.grants, "grant push grants", max) };
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

const GRANT_KEY = /^[-_a-zA-Z0-9]{16,128}$/;

function grantKey(value: unknown, name: string): string {
  if (typeof value !== "string" || !GRANT_KEY.test(value)) throw new StrataError("INVALID_ARGUMENT", `${name} must be 16..128 characters of [-_a-zA-Z0-9]; got ${describeValue(value)}`);
  return value;
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

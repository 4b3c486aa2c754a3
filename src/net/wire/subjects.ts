/**
 * The subject space of the wire protocol (shared with the coordinator; keep exactly):
 *
 *   P.w.<serverId>.<location tokens>   writes to a location served by serverId (request/reply)
 *   P.r.<serverId>.<location tokens>   reads of that location (request/reply)
 *   P.c.<location tokens>              change feed of a location (publish only, by its owner)
 *   P.coord.locate                     which server serves a location (request/reply)
 *   P.coord.register|renew|claim|…     servers' leases with the coordinator (coordinator-protocol.ts)
 *   P.s.<serverId>.handover|grant|compact|presence   to one server (presence: ./presence.ts)
 *   P.coord.presence                   the running coordinator answers who it is (./presence.ts)
 *
 * A location `acct/alice/chat` becomes the tokens `acct.alice.chat`. Location segments are
 * `[-_=a-zA-Z0-9]+`, which are always valid NATS tokens, so the mapping is exact both ways and
 * nats-server permissions on these subjects decide who may read or write which locations.
 *
 * Reply subjects: servers and the coordinator publish only to reply subjects inside the inbox
 * namespace (`<inboxPrefix>.<token>…`, nats.js's default `_INBOX`). A request naming any other
 * reply subject, e.g. someone's change feed `P.c.…`, gets no reply at all: otherwise any client
 * could make a server publish onto subjects the client itself may not publish to. The first token
 * after the inbox prefix names "a client" for per-client limits: a nats.js connection's inbox
 * (`_INBOX.<nuid>`), or a user's when nats-server permissions pin users to `_INBOX.<user>.>`.
 */
import { StrataError } from "../../errors.js";
import { describeValue } from "../../validate.js";

export const DEFAULT_PREFIX = "strata";
/** Header of a change-feed message: the epoch its location is held under (docs/failover.md). */
export const EPOCH_HEADER = "Strata-Epoch";
/** nats.js's default inbox prefix; replies go only below it unless a server is told otherwise. */
export const DEFAULT_INBOX_PREFIX = "_INBOX";

export type SubjectClass = "w" | "r";

const PREFIX_TOKEN = /^[-_a-zA-Z0-9]+$/;
const SERVER_ID = /^[-_a-zA-Z0-9]{1,64}$/;

/** A prefix is one or more dot-separated tokens of `[-_a-zA-Z0-9]`. */
export function validatePrefix(prefix: unknown): string {
  if (typeof prefix !== "string" || prefix.length === 0 || prefix.length > 128 || !prefix.split(".").every((t) => PREFIX_TOKEN.test(t))) {
    throw new StrataError("INVALID_ARGUMENT", `prefix must be dot-separated tokens of [-_a-zA-Z0-9] (e.g. "strata"), got ${describeValue(prefix)}`);
  }
  return prefix;
}

/** An inbox prefix is one or more dot-separated tokens without wildcards (e.g. "_INBOX"). */
export function validateInboxPrefix(prefix: unknown): string {
  if (typeof prefix !== "string" || prefix.length === 0 || prefix.length > 128 || !prefix.split(".").every((t) => PREFIX_TOKEN.test(t))) {
    throw new StrataError("INVALID_ARGUMENT", `inboxPrefix must be dot-separated tokens of [-_a-zA-Z0-9] (e.g. "_INBOX"), got ${describeValue(prefix)}`);
  }
  return prefix;
}

/**
 * The client a reply subject belongs to (`<inboxPrefix>.<first token>`), or undefined when the
 * subject lies outside the inbox namespace, or is not a plain subject, and must get no reply.
 */
export function replyClient(reply: string, inboxPrefix: string): string | undefined {
  if (reply.length <= inboxPrefix.length + 1 || !reply.startsWith(inboxPrefix) || reply[inboxPrefix.length] !== ".") return undefined;
  const rest = reply.slice(inboxPrefix.length + 1);
  // nats-server refuses to deliver to wildcards; empty tokens or whitespace are not a subject.
  if (/[\s*>]/.test(rest) || rest.split(".").some((t) => t.length === 0)) return undefined;
  const end = rest.indexOf(".");
  return `${inboxPrefix}.${end < 0 ? rest : rest.slice(0, end)}`;
}

export function validateServerId(id: unknown): string {
  if (typeof id !== "string" || !SERVER_ID.test(id)) {
    throw new StrataError("INVALID_ARGUMENT", `server id must be 1..64 characters of [-_a-zA-Z0-9], got ${describeValue(id)}`);
  }
  return id;
}

/** `acct/alice/chat` → `acct.alice.chat`. The location must already be valid. */
export function locationTokens(location: string): string {
  return location.replaceAll("/", ".");
}

export function requestSubject(prefix: string, cls: SubjectClass, server: string, location: string): string {
  return `${prefix}.${cls}.${server}.${locationTokens(location)}`;
}

export function changeSubject(prefix: string, location: string): string {
  return `${prefix}.c.${locationTokens(location)}`;
}

export function locateSubject(prefix: string): string {
  return `${prefix}.coord.locate`;
}

/**
 * `P.s.<id>.compact`: an operator asks one server to compact its log now (`strata compact
 * --server`; net/server/server-compact.ts). Like `P.s.<id>.handover`, only operators may publish here.
 */
export function compactSubject(prefix: string, server: string): string {
  return `${prefix}.s.${validateServerId(server)}.compact`;
}

/**
 * `P.s.<id>.presence`: the running server with this id answers who it is (./presence.ts), so that
 * a second one started under the same id refuses to start.
 */
export function presenceSubject(prefix: string, server: string): string {
  return `${prefix}.s.${validateServerId(server)}.presence`;
}

/** The subjects a server subscribes to, and the leading part its request subjects share. */
export function serverSubjects(prefix: string, server: string): Record<SubjectClass, { wildcard: string; base: string }> {
  return {
    w: { wildcard: `${prefix}.w.${server}.>`, base: `${prefix}.w.${server}.` },
    r: { wildcard: `${prefix}.r.${server}.>`, base: `${prefix}.r.${server}.` },
  };
}

/**
 * The location named by a request subject (the only place the server takes it from), or
 * undefined when the subject does not start with `base`. The result still needs validation.
 */
export function locationFromSubject(subject: string, base: string): string | undefined {
  if (!subject.startsWith(base) || subject.length === base.length) return undefined;
  return subject.slice(base.length).replaceAll(".", "/");
}

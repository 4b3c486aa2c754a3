/**
 * Bearer-token authorisation of the HTTP gateway: the tokens file (JSON or YAML), and the check
 * every data route runs before it touches the deployment.
 *
 *   tokens:
 *     - name: billing                 # shown in logs, never the token
 *       token: "at-least-16-chars-of-secret"
 *       grants:
 *         - { prefix: "acct/alice", rights: readwrite }
 *         - { prefix: "", rights: read }   # "" grants every location
 *
 * A grant's prefix matches whole location segments: "acct/alice" matches "acct/alice" and
 * "acct/alice/chat", not "acct/alicex". `read` allows GET (values, listings, watches); `readwrite`
 * also PUT, POST and DELETE.
 *
 * Invariants: tokens are compared in constant time: the presented token and every configured one
 * are hashed to 32 bytes (SHA-256) and compared with crypto.timingSafeEqual, against all configured
 * tokens without stopping at a match, so neither a token's length nor its position leaks through
 * timing. The plain tokens are not kept after loading. A file that is unreadable, malformed, or
 * holds a short or duplicate token is refused at start (INVALID_ARGUMENT), never half applied.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import fs from "node:fs";
import { parse as parseYaml } from "yaml";
import { StrataError } from "../errors.js";
import { HttpError } from "./http-errors.js";

export type Rights = "read" | "readwrite";
export type Access = "read" | "write";

export interface Grant {
  prefix: string;
  rights: Rights;
}

interface TokenEntry {
  name: string;
  hash: Buffer;
  grants: Grant[];
}

/** Shortest token accepted: shorter secrets can be guessed over HTTP. */
export const TOKEN_CHARS_MIN = 16;

export class TokenTable {
  private constructor(private readonly entries: readonly TokenEntry[]) {}

  /** Reads and checks a tokens file (JSON, or YAML when it does not parse as JSON). */
  static load(file: string): TokenTable {
    let text: string;
    try {
      text = fs.readFileSync(file, "utf8");
    } catch (cause) {
      throw new StrataError("INVALID_ARGUMENT", `cannot read the tokens file ${file} (--tokens): ${(cause as Error).message}`, { cause });
    }
    let doc: unknown;
    try {
      doc = parseYaml(text); // YAML 1.2 is a superset of JSON
    } catch (cause) {
      throw new StrataError("INVALID_ARGUMENT", `the tokens file ${file} (--tokens) is neither JSON nor YAML: ${(cause as Error).message}`, { cause });
    }
    return TokenTable.from(doc, file);
  }

  /** Checks a parsed tokens document; `where` names it in error messages. */
  static from(doc: unknown, where = "the tokens document"): TokenTable {
    const bad = (why: string) => new StrataError("INVALID_ARGUMENT", `${where}: ${why}; expected { tokens: [{ name, token, grants: [{ prefix, rights: read|readwrite }] }] }`);
    if (!isObject(doc) || !Array.isArray(doc.tokens) || doc.tokens.length === 0) throw bad("no tokens list");
    const entries: TokenEntry[] = [];
    const seen = new Set<string>();
    doc.tokens.forEach((t: unknown, i: number) => {
      if (!isObject(t)) throw bad(`tokens[${i}] is not an object`);
      const name = typeof t.name === "string" && t.name !== "" ? t.name : `tokens[${i}]`;
      if (typeof t.token !== "string" || t.token.length < TOKEN_CHARS_MIN) throw bad(`${name}: token must be a string of at least ${TOKEN_CHARS_MIN} characters`);
      if (!/^[\x21-\x7e]+$/.test(t.token)) throw bad(`${name}: token must be printable ASCII without spaces (it travels in an HTTP header)`);
      const hash = sha256(t.token);
      const hex = hash.toString("hex");
      if (seen.has(hex)) throw bad(`${name}: the same token appears twice`);
      seen.add(hex);
      if (!Array.isArray(t.grants) || t.grants.length === 0) throw bad(`${name}: grants must be a non-empty list`);
      const grants = t.grants.map((g: unknown, j: number): Grant => {
        if (!isObject(g) || typeof g.prefix !== "string") throw bad(`${name}: grants[${j}].prefix must be a string ("" for every location)`);
        if (g.rights !== "read" && g.rights !== "readwrite") throw bad(`${name}: grants[${j}].rights must be "read" or "readwrite"`);
        return { prefix: g.prefix.replace(/\/+$/, ""), rights: g.rights };
      });
      entries.push({ name, hash, grants });
    });
    return new TokenTable(entries);
  }

  get size(): number {
    return this.entries.length;
  }

  /**
   * The grants of the token in an `Authorization` header; throws 401 (with WWW-Authenticate) when
   * it is missing, malformed or unknown.
   */
  authenticate(authorization: string | undefined): { name: string; grants: readonly Grant[] } {
    const m = authorization === undefined ? null : /^Bearer[ ]+([\x21-\x7e]+)[ ]*$/i.exec(authorization);
    if (m === null) throw unauthorized(authorization === undefined ? "no Authorization header" : "malformed Authorization header", authorization === undefined ? undefined : "invalid_request");
    const presented = sha256(m[1]!);
    let found: TokenEntry | undefined;
    for (const entry of this.entries) {
      // No early exit: every entry is compared, whatever matches.
      if (timingSafeEqual(presented, entry.hash) && found === undefined) found = entry;
    }
    if (found === undefined) throw unauthorized("unknown token", "invalid_token");
    return found;
  }
}

/** Throws 403 unless one of `grants` allows `access` to `location`. */
export function authorize(grants: readonly Grant[], location: string, access: Access): void {
  for (const g of grants) {
    if (!prefixMatches(g.prefix, location)) continue;
    if (access === "read" || g.rights === "readwrite") return;
  }
  throw new HttpError(403, "FORBIDDEN", `this token may not ${access === "read" ? "read" : "write"} location "${location}"; ask for a grant of its prefix with rights ${access === "read" ? "read" : "readwrite"}`);
}

/** Whether a grant's prefix covers `location` by whole segments. */
export function prefixMatches(prefix: string, location: string): boolean {
  return prefix === "" || location === prefix || location.startsWith(`${prefix}/`);
}

function unauthorized(why: string, error: string | undefined): HttpError {
  const challenge = error === undefined ? 'Bearer realm="strata"' : `Bearer realm="strata", error="${error}"`;
  return new HttpError(401, "UNAUTHORIZED", `${why}: send "Authorization: Bearer <token>" with a token from the gateway's tokens file`, { "www-authenticate": challenge });
}

function sha256(text: string): Buffer {
  return createHash("sha256").update(text, "utf8").digest();
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

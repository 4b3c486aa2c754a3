/**
 * The kv routes of the gateway:
 *   GET    /kv/<location>          the keys, as a JSON array streamed with bounded memory
 *   GET    /kv/<location>/<key>    the value bytes; `ETag: "<revision>"`; 304 for a matching If-None-Match
 *                                  (a large value streams through as it arrives: download.ts)
 *   PUT    /kv/<location>/<key>    sets the value; If-Match: "<rev>" / If-None-Match: * (412 when unmet)
 *   DELETE /kv/<location>/<key>    deletes; `{ deleted, revision }`
 *
 * Invariants: a precondition is sent to the server as `expectedRevision` and checked there, in
 * the same commit as the write (never a read-then-write race in the gateway); a CONFLICT of a
 * request that carried one answers 412. Headers the gateway cannot honour exactly (If-Match: *,
 * a list of ETags, If-Match on DELETE) are refused with 400 rather than ignored.
 */
import type { Hono } from "hono";
import type { KvSetOptions } from "../types.js";
import { type GatewayContext, type GatewayEnv, type RouteDeps } from "./app.js";
import { valueResponse } from "./download.js";
import { HttpError } from "./http-errors.js";
import { lineStream } from "./streaming.js";

export function registerKvRoutes(app: Hono<GatewayEnv>, deps: RouteDeps): void {
  app.get("/kv/:location", async (c) => {
    const kv = deps.client.kv(deps.guard(c, "read"));
    const release = deps.slots.acquire();
    try {
      const iterator = kv.keys()[Symbol.asyncIterator]();
      const first = await iterator.next(); // errors before the first key still get their status
      const body = lineStream({ first, iterator, line: (key) => JSON.stringify(key), open: "[", separator: ",", close: "]\n", release });
      return new Response(body, { headers: { "content-type": "application/json" } });
    } catch (err) {
      release();
      throw err;
    }
  });

  app.get("/kv/:location/:key", async (c) => {
    const kv = deps.client.kv(deps.guard(c, "read"));
    const got = await kv.getStreamed(key(c));
    if (got === undefined) throw new HttpError(404, "NOT_FOUND", `no key ${JSON.stringify(key(c))} in ${kv.location}`);
    const entry = got.meta;
    const etag = `"${entry.revision}"`;
    const headers: Record<string, string> = { etag, "strata-timestamp": String(entry.timestamp) };
    if (entry.expiresAt !== undefined) headers["strata-expires-at"] = String(entry.expiresAt);
    const inm = c.req.header("if-none-match");
    if (inm !== undefined && etagList(inm).includes(etag)) {
      await got.chunks.return();
      return new Response(null, { status: 304, headers });
    }
    return valueResponse({ got, headers, downloads: deps.downloads, head: c.req.method === "HEAD", logger: deps.logger, what: `key ${JSON.stringify(key(c))} of ${kv.location}` });
  });

  app.put("/kv/:location/:key", async (c) => {
    const kv = deps.client.kv(deps.guard(c, "write"));
    const options = setOptions(c);
    const body = await deps.body.take(c.req.raw);
    try {
      const r = body.streamed !== undefined ? await kv.setStreamed(key(c), body.streamed, options) : await kv.set(key(c), body.bytes!, options);
      return c.json({ revision: r.revision, timestamp: r.timestamp }, 200, { etag: `"${r.revision}"` });
    } finally {
      body.release();
    }
  });

  app.delete("/kv/:location/:key", async (c) => {
    const kv = deps.client.kv(deps.guard(c, "write"));
    if (c.req.header("if-match") !== undefined || c.req.header("if-none-match") !== undefined) {
      throw new HttpError(400, "INVALID_ARGUMENT", "a kv DELETE takes no If-Match / If-None-Match (the server deletes unconditionally); leave the header out");
    }
    const r = await kv.delete(key(c));
    return c.json({ deleted: r.deleted, revision: r.revision });
  });
}

function key(c: GatewayContext): string {
  return c.req.param("key") ?? "";
}

/** KvSetOptions from the preconditions and `?ttl_ms=`. */
function setOptions(c: GatewayContext): KvSetOptions | undefined {
  const options: KvSetOptions = {};
  const ifMatch = c.req.header("if-match");
  const ifNoneMatch = c.req.header("if-none-match");
  if (ifMatch !== undefined && ifNoneMatch !== undefined) throw new HttpError(400, "INVALID_ARGUMENT", "give If-Match or If-None-Match, not both");
  if (ifMatch !== undefined) {
    c.set("precondition", true);
    options.expectedRevision = revisionOf(ifMatch);
  }
  if (ifNoneMatch !== undefined) {
    if (ifNoneMatch.trim() !== "*") throw new HttpError(400, "INVALID_ARGUMENT", 'a PUT takes only If-None-Match: * (the key must not exist); use If-Match: "<revision>" to replace a known revision');
    c.set("precondition", true);
    options.expectedRevision = 0;
  }
  const ttl = c.req.query("ttl_ms");
  if (ttl !== undefined) {
    if (!/^[1-9][0-9]{0,15}$/.test(ttl)) throw new HttpError(400, "INVALID_ARGUMENT", `?ttl_ms must be a positive integer (milliseconds), got ${JSON.stringify(ttl.slice(0, 40))}`);
    options.ttlMs = Number(ttl);
  }
  return Object.keys(options).length === 0 ? undefined : options;
}

/** The revision in an If-Match header: one strong ETag `"<n>"` (or a bare n). */
function revisionOf(header: string): number {
  const list = etagList(header);
  const m = list.length === 1 ? /^"([1-9][0-9]{0,15})"$/.exec(list[0]!) ?? /^([1-9][0-9]{0,15})$/.exec(list[0]!) : null;
  if (m === null) {
    throw new HttpError(400, "INVALID_ARGUMENT", `If-Match must be one ETag of this gateway, "<revision>" as GET returned it (If-Match: * and lists are not supported), got ${JSON.stringify(header.slice(0, 60))}`);
  }
  return Number(m[1]);
}

function etagList(header: string): string[] {
  return header
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}


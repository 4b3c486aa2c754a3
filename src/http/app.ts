/**
 * The gateway's Hono application: routes, the auth guard every data route runs first, and the
 * error handler that turns any failure into `{ code, message }` with its status (http-errors.ts).
 *
 * URL scheme (unambiguous by construction): a location is ONE path segment, percent-encoded
 * (`acct/alice/chat` → `acct%2Falice%2Fchat`), and a kv key or a seq is the segment after it (kv
 * keys that hold `/` or other reserved characters are percent-encoded as well). So `/kv/<loc>`
 * is a listing, `/kv/<loc>/<key>` one key, `/streams/<loc>/<seq>` one message, and the literal
 * `/streams/<loc>/watch` the change feed (a seq is digits only, so it never reads as "watch").
 *
 * Invariants: a data route authenticates (401) and authorises the location for its access (403)
 * before it reads the body or sends anything to the deployment; only `/openapi.json` and
 * `/healthz` answer without a token. Every response's body is either sent or cancelled, so what it
 * holds (a slot, a watch, a reply stream) is given back: Hono answers HEAD by running the GET route
 * and dropping its body unread, so the gateway cancels that body itself; and once the deployment
 * has answered, a response whose connection moves nothing for `httpWriteStallMs` is cut.
 */
import type { ServerResponse } from "node:http";
import { Hono, type Context } from "hono";
import { StrataError } from "../errors.js";
import type { Logger } from "../logger.js";
import { errorFields } from "../logger.js";
import type { StrataClient } from "../net/client/client.js";
import { authorize, type Access, type TokenTable } from "./auth.js";
import { BodyBudget } from "./body.js";
import { errorAnswer, errorResponse, HttpError } from "./http-errors.js";
import type { HttpLimits } from "./http-limits.js";
import { openApiDocument } from "./openapi.js";
import { registerKvRoutes } from "./routes-kv.js";
import { registerStreamRoutes } from "./routes-streams.js";
import { StreamSlots } from "./streaming.js";

export interface GatewayEnv {
  Variables: { precondition: boolean };
  /** The Node response (from @hono/node-server); absent when the app is called without a server. */
  Bindings: { outgoing?: ServerResponse } | undefined;
}

export type GatewayContext = Context<GatewayEnv>;

export interface GatewayDeps {
  client: StrataClient;
  /** Undefined: no authentication (only with `--no-auth`). */
  tokens: TokenTable | undefined;
  limits: HttpLimits;
  logger: Logger;
}

/** What the routes share: the client, the guard and the bounded resources. */
export interface RouteDeps extends GatewayDeps {
  body: BodyBudget;
  slots: StreamSlots;
  /** GETs of a value larger than one NATS message being sent (httpDownloadsMax; download.ts). */
  downloads: StreamSlots;
  /** SSE watches open now, ended at shutdown (they never end on their own). */
  watches: Set<{ stop(): void }>;
  /** Authenticates and authorises; resolves to the location as decoded from the URL. */
  guard(c: GatewayContext, access: Access): string;
}

/** What a gateway holds now: streamed responses open and bytes reserved by request bodies. */
export interface GatewayStats {
  streamsOpen: number;
  /** Large values being sent as they arrive (download.ts). */
  downloadsOpen: number;
  bodyInflightBytes: number;
}

export function createGatewayApp(deps: GatewayDeps): { app: Hono<GatewayEnv>; stats: () => GatewayStats; endWatches: () => void } {
  const app = new Hono<GatewayEnv>();
  const routeDeps: RouteDeps = {
    ...deps,
    body: new BodyBudget(deps.limits),
    slots: new StreamSlots(deps.limits.httpStreamsMax),
    downloads: new StreamSlots(deps.limits.httpDownloadsMax, "large values being downloaded (httpDownloadsMax)"),
    watches: new Set(),
    guard: (c, access) => {
      const location = c.req.param("location") ?? "";
      if (deps.tokens !== undefined) authorize(deps.tokens.authenticate(c.req.header("authorization")).grants, location, access);
      return location;
    },
  };
  app.use("*", async (c, next) => {
    await next();
    // Hono runs the GET route for a HEAD and drops the body without reading or cancelling it: a
    // listing's slot and reply stream, or a watch, would stay open for good.
    if (c.req.method === "HEAD") await c.res.body?.cancel().catch(() => {});
    // The socket's idle timer (no listener: Node destroys the socket, which cancels the body).
    else c.env?.outgoing?.setTimeout(deps.limits.httpWriteStallMs);
  });
  app.get("/openapi.json", (c) => c.json(openApiDocument()));
  app.get("/healthz", (c) => c.json({ ok: true }));
  registerKvRoutes(app, routeDeps);
  registerStreamRoutes(app, routeDeps);
  app.notFound((c) => {
    const allow = allowedMethods(c.req.path);
    if (allow !== undefined) throw new HttpError(405, "METHOD_NOT_ALLOWED", `${c.req.method} is not served on this route; it serves ${allow.join(", ")} (see /openapi.json)`, { allow: allow.join(", ") });
    throw new HttpError(404, "NOT_FOUND", "no such route; see /openapi.json (locations are one percent-encoded path segment, e.g. /kv/acct%2Falice/key)");
  });
  app.onError((err, c) =>
    errorResponse(
      errorAnswer(err, {
        precondition: c.get("precondition") === true,
        retryAfterSeconds: deps.limits.httpRetryAfterSeconds,
        onInternal: (e) => deps.logger.error({ event: "http_internal_error", method: c.req.method, path: c.req.path, ...errorFields(e) }, "the gateway failed a request"),
      }),
    ),
  );
  return {
    app,
    stats: () => ({ streamsOpen: routeDeps.slots.count, downloadsOpen: routeDeps.downloads.count, bodyInflightBytes: routeDeps.body.inflightBytes }),
    endWatches: () => {
      for (const w of [...routeDeps.watches]) w.stop();
    },
  };
}

/** A path parameter that must be a sequence number (1 … 2^53-1). */
export function parseSeq(text: string | undefined, what: string): number {
  const n = Number(text);
  if (text === undefined || !/^[1-9][0-9]{0,15}$/.test(text) || !Number.isSafeInteger(n)) {
    throw new HttpError(400, "INVALID_ARGUMENT", `${what} must be a positive integer sequence number, got ${JSON.stringify((text ?? "").slice(0, 40))}`);
  }
  return n;
}

/** An optional query parameter that must be a sequence number. */
export function querySeq(c: GatewayContext, name: string): number | undefined {
  const text = c.req.query(name);
  return text === undefined ? undefined : parseSeq(text, `?${name}`);
}

/** The JSON body of an error written into an already started response (NDJSON / SSE). */
export function inlineError(err: unknown): { code: string; message: string } {
  if (err instanceof HttpError) return { code: err.code, message: err.message };
  if (StrataError.is(err)) return { code: err.code, message: err.message };
  return { code: "INTERNAL", message: "the gateway failed unexpectedly; see its log" };
}

/** Base64 of a value, for JSON lines and events. */
export function base64(value: Uint8Array): string {
  return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("base64");
}

/**
 * The methods the gateway serves on `path` (HEAD wherever GET is), or undefined when no route has
 * its shape: a request with another method gets 405 and `Allow`, not 404. Mirrors the routes
 * registered above and in routes-kv.ts / routes-streams.ts.
 */
export function allowedMethods(path: string): string[] | undefined {
  const parts = path.split("/").slice(1);
  const [top, location, last] = parts;
  if (parts.length === 1 && (top === "openapi.json" || top === "healthz")) return ["GET", "HEAD"];
  if (location === undefined || location === "") return undefined;
  if (top === "kv") {
    if (parts.length === 2) return ["GET", "HEAD"];
    if (parts.length === 3 && last !== "") return ["GET", "HEAD", "PUT", "DELETE"];
  }
  if (top === "streams") {
    if (parts.length === 2) return ["GET", "HEAD", "POST", "DELETE"];
    if (parts.length === 3 && last === "watch") return ["GET", "HEAD"];
    if (parts.length === 3 && last !== "") return ["GET", "HEAD", "DELETE"];
  }
  return undefined;
}

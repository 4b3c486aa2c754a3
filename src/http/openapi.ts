/**
 * The gateway's OpenAPI 3 document, served at /openapi.json: written by hand, next to the routes it
 * describes (a test checks that every route the app serves is in it, with the same methods).
 */
import { STATUS_OF_CODE } from "./http-errors.js";

const location = { name: "location", in: "path", required: true, description: 'The location, percent-encoded as ONE path segment: "acct/alice/chat" → "acct%2Falice%2Fchat".', schema: { type: "string" } };
const key = { name: "key", in: "path", required: true, description: "The kv key, percent-encoded (a key with / is %2F-encoded).", schema: { type: "string" } };
const seq = { name: "seq", in: "path", required: true, description: "A message sequence number (1 … 2^53-1).", schema: { type: "integer", minimum: 1 } };

const error = { description: "An error: `{ code, message }` (see components.schemas.Error for the status of each code).", content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } } };
const errors = {
  "400": error,
  "401": { ...error, description: "Missing or unknown bearer token (WWW-Authenticate: Bearer)." },
  "403": { ...error, description: "The token has no grant of this location for this access." },
  "409": error,
  "413": error,
  "503": { ...error, description: "Unavailable or busy; retry after Retry-After seconds." },
  "504": error,
};
const json = (schema: object, description: string) => ({ description, content: { "application/json": { schema } } });
const bytes = (description: string, headers: object = {}) => ({ description, headers, content: { "application/octet-stream": { schema: { type: "string", format: "binary" } } } });
const header = (description: string, type = "string") => ({ description, schema: { type } });

export function openApiDocument(): Record<string, unknown> {
  return {
    openapi: "3.0.3",
    info: {
      title: "Strata HTTP gateway",
      version: "1",
      description:
        "A REST face of a Strata deployment (`strata http`). Locations are one percent-encoded path segment. Values travel as raw bytes in request and response bodies, and as base64 in NDJSON lines and SSE events.",
    },
    security: [{ bearer: [] }],
    paths: {
      "/openapi.json": { get: { summary: "This document", security: [], responses: { "200": json({ type: "object" }, "The OpenAPI document") } } },
      "/healthz": { get: { summary: "The gateway process is up", security: [], responses: { "200": json({ type: "object" }, "{ ok: true }") } } },
      "/kv/{location}": {
        parameters: [location],
        get: { summary: "The keys of a kv location, as a JSON array streamed with bounded memory", responses: { "200": json({ type: "array", items: { type: "string" } }, "Every live key; a failure after the array began aborts the response (truncated JSON)"), ...errors } },
      },
      "/kv/{location}/{key}": {
        parameters: [location, key],
        get: {
          summary: "The value of a key (a large one streams as it is read: Content-Length is its length; a cut connection means retry)",
          parameters: [{ name: "If-None-Match", in: "header", schema: { type: "string" }, description: 'An ETag from an earlier GET: 304 when it is still current' }],
          responses: { "200": bytes("The value", { ETag: header('"<revision>" of the key'), "Strata-Timestamp": header("ms since the epoch", "integer") }), "304": { description: "Not modified" }, "404": error, ...errors },
        },
        put: {
          summary: "Sets the value of a key",
          parameters: [
            { name: "If-Match", in: "header", schema: { type: "string" }, description: 'Write only if the key\'s revision is this ETag ("<revision>"); 412 otherwise' },
            { name: "If-None-Match", in: "header", schema: { type: "string", enum: ["*"] }, description: "Write only if the key does not exist; 412 otherwise" },
            { name: "ttl_ms", in: "query", schema: { type: "integer", minimum: 1 }, description: "The entry expires this long after the write" },
          ],
          requestBody: { required: true, content: { "application/octet-stream": { schema: { type: "string", format: "binary" } } } },
          responses: { "200": json({ $ref: "#/components/schemas/KvWrite" }, "Written (ETag: the new revision)"), "412": error, ...errors },
        },
        delete: { summary: "Deletes a key", responses: { "200": json({ $ref: "#/components/schemas/Deleted" }, "deleted is false when the key did not exist"), ...errors } },
      },
      "/streams/{location}": {
        parameters: [location],
        post: {
          summary: "Appends the body as a message",
          parameters: [{ name: "Idempotency-Key", in: "header", schema: { type: "string" }, description: "The msgId: a repeat within the dedup window returns the first seq and writes nothing" }],
          requestBody: { required: true, content: { "application/octet-stream": { schema: { type: "string", format: "binary" } } } },
          responses: { "200": json({ $ref: "#/components/schemas/Appended" }, "Appended (or a duplicate of an earlier append)"), ...errors },
        },
        get: {
          summary: "The messages from start_seq on, as NDJSON streamed with bounded memory",
          parameters: [{ name: "start_seq", in: "query", schema: { type: "integer", minimum: 1 } }],
          responses: {
            "200": { description: 'One JSON object per line: { seq, timestamp, value (base64), headers? }; a failure after the first line ends the body with { "error": { code, message } }', content: { "application/x-ndjson": { schema: { $ref: "#/components/schemas/Message" } } } },
            ...errors,
          },
        },
        delete: {
          summary: "Deletes every message (up to end_seq)",
          parameters: [{ name: "end_seq", in: "query", schema: { type: "integer", minimum: 1 } }],
          responses: { "200": json({ type: "object", properties: { count: { type: "integer" }, revision: { type: "integer" } } }, "How many were deleted"), ...errors },
        },
      },
      "/streams/{location}/watch": {
        parameters: [location],
        get: {
          summary: "Server-Sent Events: the messages from start_seq (or Last-Event-ID + 1) on, then every change live",
          parameters: [
            { name: "Last-Event-ID", in: "header", schema: { type: "integer" }, description: "Resume after this seq (set by EventSource on reconnect)" },
            { name: "start_seq", in: "query", schema: { type: "integer", minimum: 1 } },
          ],
          responses: {
            "200": { description: "Events `set` (id: seq; data: { seq, timestamp, value (base64) or chunked: true, headers?, revision }), `delete` ({ seq, revision }), `deleteAll` ({ endSeq, count, revision }), `error` ({ code, message }, then the stream ends)", content: { "text/event-stream": { schema: { type: "string" } } } },
            ...errors,
          },
        },
      },
      "/streams/{location}/{seq}": {
        parameters: [location, seq],
        get: { summary: "The value of one message", responses: { "200": bytes("The value", { "Strata-Seq": header("seq", "integer"), "Strata-Timestamp": header("ms since the epoch", "integer") }), "404": error, ...errors } },
        delete: { summary: "Deletes one message", responses: { "200": json({ $ref: "#/components/schemas/Deleted" }, "deleted is false when there was none"), ...errors } },
      },
    },
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer", description: "A token of the gateway's --tokens file; its grants name location prefixes with read or readwrite rights" } },
      schemas: {
        Error: {
          type: "object",
          required: ["code", "message"],
          properties: { code: { type: "string" }, message: { type: "string" } },
          description: `HTTP status by code: ${Object.entries(STATUS_OF_CODE)
            .map(([c, s]) => `${c} ${s}`)
            .join(", ")}; CONFLICT is 412 when the request had If-Match / If-None-Match. The gateway's own: NOT_FOUND 404, UNAUTHORIZED 401, BUSY 503.`,
        },
        KvWrite: { type: "object", properties: { revision: { type: "integer" }, timestamp: { type: "integer" } } },
        Deleted: { type: "object", properties: { deleted: { type: "boolean" }, revision: { type: "integer" } } },
        Appended: { type: "object", properties: { seq: { type: "integer" }, revision: { type: "integer" }, timestamp: { type: "integer" }, duplicate: { type: "boolean" } } },
        Message: { type: "object", properties: { seq: { type: "integer" }, timestamp: { type: "integer" }, value: { type: "string", format: "byte" }, headers: { type: "object", additionalProperties: { type: "string" } } } },
      },
    },
  };
}

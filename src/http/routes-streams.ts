/**
 * The stream routes of the gateway:
 *   POST   /streams/<location>              appends the body (Idempotency-Key → msgId); `{ seq, revision, timestamp, duplicate? }`
 *   GET    /streams/<location>?start_seq=N  the messages as NDJSON, one JSON object per line, value in base64
 *   DELETE /streams/<location>?end_seq=N    deletes every message (up to end_seq); `{ count, revision }`
 *   GET    /streams/<location>/watch        Server-Sent Events; resumable with Last-Event-ID (= seq)
 *   GET    /streams/<location>/<seq>        the value bytes of one message (a large one streams through: download.ts)
 *   DELETE /streams/<location>/<seq>        deletes one message; `{ deleted, revision }`
 *
 * Invariants: NDJSON and SSE responses hold one slot of httpStreamsMax and at most one batch of
 * the client's iterator (streaming.ts); a failure before the first line (for a watch: before the
 * server accepted its start, within httpWatchStartMs) gets its HTTP status, and gives back the slot
 * and the watch; a failure after it ends the body with a last line `{"error":{code,message}}` (NDJSON) or an
 * `event: error` (SSE). SSE ids are message seqs: a `set` event carries `id: <seq>`, so a client
 * that reconnects with Last-Event-ID N resumes with the messages from seq N+1 as they are then;
 * deletions are events without an id, and those made while it was away are not replayed.
 */
import type { Hono } from "hono";
import type { Change, StoredMessage } from "../types.js";
import { base64, inlineError, parseSeq, querySeq, type GatewayEnv, type RouteDeps } from "./app.js";
import { valueResponse } from "./download.js";
import { HttpError } from "./http-errors.js";
import { lineStream, sseStream, startedWithin } from "./streaming.js";

/** An Idempotency-Key longer than this is refused at the edge (the server's msgIdBytesMax is smaller still by default). */
const IDEMPOTENCY_KEY_CHARS_MAX = 1024;

export function registerStreamRoutes(app: Hono<GatewayEnv>, deps: RouteDeps): void {
  app.post("/streams/:location", async (c) => {
    const stream = deps.client.stream(deps.guard(c, "write"));
    const msgId = c.req.header("idempotency-key");
    if (msgId !== undefined && (msgId === "" || msgId.length > IDEMPOTENCY_KEY_CHARS_MAX)) {
      throw new HttpError(400, "INVALID_ARGUMENT", `Idempotency-Key must be 1 to ${IDEMPOTENCY_KEY_CHARS_MAX} characters`);
    }
    const body = await deps.body.take(c.req.raw);
    const options = msgId === undefined ? undefined : { msgId };
    try {
      const r = body.streamed !== undefined ? await stream.appendStreamed(body.streamed, options) : await stream.append({ value: body.bytes! }, options);
      const out: Record<string, unknown> = { seq: r.seq, revision: r.revision, timestamp: r.timestamp };
      if (r.duplicate) out.duplicate = true;
      return c.json(out);
    } finally {
      body.release();
    }
  });

  app.get("/streams/:location", async (c) => {
    const stream = deps.client.stream(deps.guard(c, "read"));
    const startSeq = querySeq(c, "start_seq");
    const release = deps.slots.acquire();
    try {
      const iterator = stream.getAll(startSeq === undefined ? undefined : { startSeq })[Symbol.asyncIterator]();
      const first = await iterator.next();
      const body = lineStream({
        first,
        iterator,
        line: (m) => `${JSON.stringify(messageJson(m))}\n`,
        failure: (err) => `${JSON.stringify({ error: inlineError(err) })}\n`,
        release,
      });
      return new Response(body, { headers: { "content-type": "application/x-ndjson" } });
    } catch (err) {
      release();
      throw err;
    }
  });

  app.delete("/streams/:location", async (c) => {
    const stream = deps.client.stream(deps.guard(c, "write"));
    const endSeq = querySeq(c, "end_seq");
    const r = await stream.deleteAll(endSeq === undefined ? undefined : { endSeq });
    return c.json({ count: r.count, revision: r.revision });
  });

  app.get("/streams/:location/watch", async (c) => {
    const stream = deps.client.stream(deps.guard(c, "read"));
    const lastEventId = c.req.header("last-event-id");
    const startSeq = lastEventId !== undefined ? parseSeq(lastEventId, "Last-Event-ID") + 1 : querySeq(c, "start_seq");
    const release = deps.slots.acquire();
    const watch = stream.watch(startSeq === undefined ? {} : { startSeq });
    deps.watches.add(watch);
    const end = () => {
      watch.stop();
      deps.watches.delete(watch);
      release();
    };
    try {
      // A refused start answers its status: an EventSource reconnects after any 200, however it ends.
      await startedWithin(watch.started, deps.limits.httpWatchStartMs);
    } catch (err) {
      end();
      throw err;
    }
    const body = sseStream<Change>({
      iterator: watch,
      event: sseEvent,
      keepaliveMs: deps.limits.httpSseKeepaliveMs,
      failure: (err) => JSON.stringify(inlineError(err)),
      release: end,
    });
    return new Response(body, { headers: { "content-type": "text/event-stream", "cache-control": "no-cache", "x-accel-buffering": "no" } });
  });

  app.get("/streams/:location/:seq", async (c) => {
    const stream = deps.client.stream(deps.guard(c, "read"));
    const seq = parseSeq(c.req.param("seq"), "the seq in the path");
    const got = await stream.getStreamed(seq);
    if (got === undefined) throw new HttpError(404, "NOT_FOUND", `no message ${seq} in ${stream.location}`);
    const headers = { "strata-seq": String(got.meta.seq), "strata-timestamp": String(got.meta.timestamp) };
    return valueResponse({ got, headers, downloads: deps.downloads, head: c.req.method === "HEAD", logger: deps.logger, what: `message ${seq} of ${stream.location}` });
  });

  app.delete("/streams/:location/:seq", async (c) => {
    const stream = deps.client.stream(deps.guard(c, "write"));
    const seq = parseSeq(c.req.param("seq"), "the seq in the path");
    const r = await stream.delete(seq);
    return c.json({ deleted: r.deleted, revision: r.revision });
  });
}

/** One NDJSON line's object: the message with its value in base64. */
function messageJson(m: StoredMessage): Record<string, unknown> {
  const out: Record<string, unknown> = { seq: m.seq, timestamp: m.timestamp, value: base64(m.value) };
  if (m.headers !== undefined) out.headers = m.headers;
  return out;
}

/** The SSE event of a stream change (a watch of a stream location yields only stream changes). */
function sseEvent(change: Change): { id?: string; event: string; data: string } {
  if (change.kind !== "stream") return { event: "unknown", data: "{}" };
  if (change.op === "set") {
    const data: Record<string, unknown> = { ...messageJson(change.message), revision: change.revision };
    if (change.chunked) {
      // The feed leaves large values out; the client reads it with GET /streams/<location>/<seq>.
      delete data.value;
      data.chunked = true;
    }
    return { id: String(change.seq), event: "set", data: JSON.stringify(data) };
  }
  if (change.op === "delete") return { event: "delete", data: JSON.stringify({ seq: change.seq, revision: change.revision }) };
  return { event: "deleteAll", data: JSON.stringify({ endSeq: change.endSeq, count: change.count, revision: change.revision }) };
}

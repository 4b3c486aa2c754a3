/**
 * Client-side coalescing of small requests (what Kafka's producer calls batching): requests to the
 * same subject (same server, location and class) issued in the same turn of the event loop travel
 * as one `batch` request and come back as one reply, so 256 appends in flight cost a few NATS
 * messages instead of 512 + the change feed, on the client, on nats-server and on the server.
 *
 * Every call keeps its own semantics: the server runs the items in order, each on its own (as
 * separate requests would run), and answers each with its own result or error; a call's promise
 * settles with its own item. Only when the batch as a whole fails (timeout, no responders, a
 * refused publish) do all its calls get that error, and each call's retry rule then applies to it
 * alone (client/client-call.ts). A turn with a single request sends it as it is. The batch is sent
 * once the callers of this turn have run: when nothing of this client is in flight, as soon as the
 * current callback and its microtasks are done (process.nextTick; a lone call waits for no turn of
 * the event loop), else from `setImmediate`, so that every reply read in one turn, and the calls
 * they release, make one batch.
 *
 * Only ops whose request fits in one message and whose reply the server computes in one go are
 * coalesced (see COALESCED_OPS); uploads, streamed replies and appendMany/setMany go alone, and a
 * get whose value turns out to be large comes back marked `alone`: it is asked again by itself,
 * so that the server can stream the value from disk instead of holding it in a batch reply.
 *
 * It lives in wire/, not client/, because `COALESCED_OPS` is part of the protocol: the server
 * (server/server-handlers.ts) accepts a batch only of these ops, and server/ never imports client/.
 */
import { StrataError } from "../../errors.js";
import type { ItemResult } from "../../types.js";
import { encode } from "./wire-codec.js";
import { errorFromWire } from "./wire-errors.js";

/** Ops the server accepts inside a `batch` (server/server-handlers.ts checks the same list). */
export const COALESCED_OPS: ReadonlySet<string> = new Set([
  "stream.append",
  "stream.set",
  "stream.delete",
  "stream.get",
  "kv.set",
  "kv.delete",
  "kv.get",
]);

export interface CoalesceTarget {
  subject: string;
}

/** Sends one request (a batch, or a lone item) and resolves to the reply's `ok` value. */
export type Send = (target: CoalesceTarget, bytes: Uint8Array, deadline: number) => Promise<unknown>;

interface Item {
  bytes: Uint8Array;
  deadline: number;
  resolve: (result: unknown) => void;
  reject: (err: unknown) => void;
}

interface Batch {
  kind: boolean;
  target: CoalesceTarget;
  items: Item[];
  bytes: number;
}

export class Coalescer {
  private readonly open = new Map<string, Batch>();
  private scheduled = false;
  /** Requests sent and not answered yet. */
  private inFlight = 0;

  /**
   * @param itemsMax most requests in one batch (1 turns coalescing off)
   * @param bytesMax most bytes of the items of one batch (they must fit in one message)
   */
  constructor(
    private readonly send: Send,
    private readonly itemsMax: number,
    private readonly bytesMax: () => number,
  ) {}

  /** Whether a request of this op and size may wait for others. */
  accepts(op: unknown, bytes: number): boolean {
    return this.itemsMax > 1 && typeof op === "string" && COALESCED_OPS.has(op) && bytes <= this.bytesMax();
  }

  /**
   * Queues an encoded request; settles with its own result or error. A request joins the open
   * batch of its subject if that batch is of the same `kind` (calls with different time budgets
   * are not mixed) and has room; otherwise that batch is sent first, so the order holds.
   */
  add(target: CoalesceTarget, kind: boolean, bytes: Uint8Array, deadline: number): Promise<unknown> {
    let batch = this.open.get(target.subject);
    if (batch !== undefined && (batch.kind !== kind || batch.items.length >= this.itemsMax || batch.bytes + bytes.byteLength > this.bytesMax())) {
      this.dispatch(batch);
      batch = undefined;
    }
    if (batch === undefined) {
      batch = { kind, target, items: [], bytes: 0 };
      this.open.set(target.subject, batch);
    }
    const b = batch;
    const result = new Promise<unknown>((resolve, reject) => b.items.push({ bytes, deadline, resolve, reject }));
    b.bytes += bytes.byteLength;
    if (!this.scheduled) {
      this.scheduled = true;
      if (this.inFlight === 0) process.nextTick(() => this.flush());
      else setImmediate(() => this.flush());
    }
    return result;
  }

  private flush(): void {
    this.scheduled = false;
    for (const batch of [...this.open.values()]) this.dispatch(batch);
  }

  private dispatch(batch: Batch): void {
    this.open.delete(batch.target.subject);
    const items = batch.items;
    if (items.length === 1) {
      const item = items[0]!;
      this.sent(this.send(batch.target, item.bytes, item.deadline)).then(item.resolve, item.reject);
      return;
    }
    let deadline = Infinity;
    for (const item of items) deadline = Math.min(deadline, item.deadline);
    let bytes: Uint8Array;
    try {
      bytes = encode({ op: "batch", items: items.map((i) => i.bytes) });
    } catch (err) {
      for (const item of items) item.reject(err);
      return;
    }
    this.sent(this.send(batch.target, bytes, deadline)).then(
      (results) => this.settle(batch.target, items, results),
      (err) => {
        for (const item of items) item.reject(err);
      },
    );
  }

  /** Counts a request in flight until it settles (before its callers hear of it). */
  private sent(reply: Promise<unknown>): Promise<unknown> {
    this.inFlight += 1;
    return reply.then(
      (result) => {
        this.inFlight -= 1;
        return result;
      },
      (err: unknown) => {
        this.inFlight -= 1;
        throw err;
      },
    );
  }

  /** Hands each call its own item of a batch reply; an item the server wants asked alone is sent again alone. */
  private settle(target: CoalesceTarget, items: Item[], results: unknown): void {
    if (!Array.isArray(results) || results.length !== items.length) {
      const err = new StrataError("CORRUPT", `a batch reply must hold ${items.length} results`);
      for (const item of items) item.reject(err);
      return;
    }
    for (let i = 0; i < items.length; i++) {
      const r = results[i] as (ItemResult<unknown> & { alone?: boolean }) | undefined;
      const item = items[i]!;
      if (r?.ok === true) item.resolve(r.result);
      else if (r?.ok === false && r.alone === true) this.send(target, item.bytes, item.deadline).then(item.resolve, item.reject);
      else if (r?.ok === false && typeof r.error?.code === "string") item.reject(errorFromWire(r.error.code, String(r.error.message ?? "")));
      else item.reject(new StrataError("CORRUPT", "malformed item in a batch reply"));
    }
  }
}

/**
 * Room in the reply budget (reply-budget.ts) for reads answered in one go: a get, a `changes`
 * page, and the gets of a coalesced `batch`. The room is reserved BEFORE the read, from the size
 * the index gives, so that requests waiting for room hold only their small request, never the
 * values they asked for: a thousand gets of a 1 MiB value cost the server the budget, not 1 GiB.
 *
 * A batch's gets are read one after another, each once its room is reserved, and together carry
 * at most `batchReplyBytesMax` bytes: a get that would go past it is answered ASK_ALONE
 * (TOO_LARGE with `alone: true` on the wire), and the client asks for it in a request of its own,
 * exactly as for a value too large for a batch reply.
 */
import type { WireMap } from "../wire/wire-codec.js";
import type { RequestContext } from "./server-handlers.js";
import { SMALL_REPLY_BYTES, type Hold } from "./reply-budget.js";
import { getRecordBytes } from "./store-scan.js";

/** Bytes of a reply besides its value (CBOR envelope, message, headers, timestamp). */
const REPLY_OVERHEAD_BYTES = 1024;

/** The result of a batch's get that must be asked for alone. */
export const ASK_ALONE: unique symbol = Symbol("ask alone");

/**
 * Room for the reply of a read: a value is held twice while it is answered (as read, and
 * encoded into the reply). Undefined for ops that need none (writes, whose replies are small).
 */
export function holdForRead(ctx: RequestContext, body: WireMap): Promise<Hold> | undefined {
  const bytes = readReplyBytes(ctx, body);
  if (bytes === undefined) return undefined;
  // A small value's reply goes on the main connection, from the pool of small replies.
  // (Not for a reader whose replies all go on the bulk connection: it must not drain the small pool.)
  const small = bytes <= 2 * (SMALL_REPLY_BYTES - REPLY_OVERHEAD_BYTES) && !ctx.replies.isBulkReader(ctx.reply);
  return ctx.replies.budget.reserve(bytes, small ? "small" : "reply");
}

function readReplyBytes(ctx: RequestContext, body: WireMap): number | undefined {
  if (ctx.cls !== "r") return undefined;
  if (body.op === "stream.get") return 2 * getRecordBytes(ctx.store, ctx.location, "stream.get", body.seq) + REPLY_OVERHEAD_BYTES;
  if (body.op === "kv.get") return 2 * getRecordBytes(ctx.store, ctx.location, "kv.get", body.key) + REPLY_OVERHEAD_BYTES;
  // A page of changes is bounded by changesReplyBytesMax, plus the one change that crosses it.
  if (body.op === "changes") return 2 * (ctx.limits.changesReplyBytesMax + ctx.store.limits.recordBytesMax);
  return undefined;
}

/** The gets of one batch: read in order, each after its room is reserved, within batchReplyBytesMax. */
export class BatchReads {
  private chain: Promise<unknown> = Promise.resolve();
  private bytes = 0;
  private readonly holds: Hold[] = [];
  private failure: unknown;

  constructor(private readonly ctx: RequestContext) {}

  /** Runs `compute` (a get of the batch) after the gets before it; resolves to ASK_ALONE past the limit. */
  read(request: WireMap, compute: () => unknown): Promise<unknown> {
    const run = this.chain.then(async () => {
      if (this.failure !== undefined) throw this.failure;
      const bytes = readReplyBytes(this.ctx, request) ?? REPLY_OVERHEAD_BYTES;
      if (this.bytes > 0 && this.bytes + bytes > this.ctx.limits.batchReplyBytesMax) return ASK_ALONE;
      try {
        this.holds.push(await this.ctx.replies.budget.reserve(bytes));
      } catch (err) {
        // No room now: the gets after this one would only wait as long again.
        this.failure = err;
        throw err;
      }
      this.bytes += bytes;
      return compute();
    });
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Frees the room once the batch's reply is published. */
  release(): void {
    for (const hold of this.holds.splice(0)) hold.release();
  }
}

/**
 * A watcher's `changes { after, limit, shownEpoch? }` request (./watch.ts, step 3 and failover):
 * the reply checked for its shape, and `shownEpoch`, the epoch the watcher was last shown changes
 * under, so that an owner two or more moves later answers `since` from the location's lineage
 * (docs/failover.md step 3). A server of an earlier release refuses the field (INVALID_ARGUMENT
 * naming it): the request is sent again without it, and the field is left out until the epoch
 * changes (that server's `since` is its own epoch's start, as before lineages).
 */
import { StrataError } from "../../errors.js";
import type { Caller } from "./client-call.js";
import { isPlainMap, type WireMap } from "../wire/wire-codec.js";

/** A `changes` reply: the changes (unchecked items), whether more follow, and under a coordinator the epoch and `since`. */
export interface ChangesReply {
  changes: unknown[];
  more: boolean;
  epoch?: number;
  since?: number;
}

export class ChangesRequests {
  /** The epoch at which a server refused `shownEpoch` (an earlier release): not sent while it lasts. */
  private shownRefusedAt = -1;

  constructor(
    private readonly caller: Caller,
    private readonly location: string,
  ) {}

  /** The changes after `after` (at most `limit`), asked of the location's owner; `epoch`: the highest the watcher knows (0: none). */
  async fetch(after: number, limit: number, epoch: number): Promise<ChangesReply> {
    const call = { location: this.location, cls: "r" as const, idempotent: true };
    const body: WireMap = { op: "changes", after, limit };
    if (epoch > 0 && this.shownRefusedAt !== epoch) body.shownEpoch = epoch;
    let reply: unknown;
    try {
      reply = await this.caller.request(call, body);
    } catch (err) {
      if (body.shownEpoch === undefined || !StrataError.is(err, "INVALID_ARGUMENT") || !err.message.includes('"shownEpoch"')) throw err;
      // A server of an earlier release: ask as before (its `since` is where its epoch began).
      this.shownRefusedAt = epoch;
      delete body.shownEpoch;
      reply = await this.caller.request(call, body);
    }
    if (!isPlainMap(reply) || !Array.isArray(reply.changes)) throw new StrataError("CORRUPT", "malformed changes reply");
    const out: ChangesReply = { changes: reply.changes, more: reply.more === true };
    if (typeof reply.epoch === "number") out.epoch = reply.epoch;
    if (typeof reply.since === "number") out.since = reply.since;
    return out;
  }
}

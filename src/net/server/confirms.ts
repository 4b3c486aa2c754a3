/**
 * Confirming `ack: "object"` writes with the coordinator (./ownership.ts): after a write's segment
 * is in the object store, and before it is acknowledged, the coordinator is asked whether the
 * location is still held under the epoch the write was made at.
 *
 * Invariants:
 * - The confirms of one turn of the event loop go out together, at most `batchMax` locations per
 *   request, one request per batch.
 * - A stale epoch answers TIMEOUT (the write may or may not be part of the location's history)
 *   and ends the grant it was made under (`onStale`). A coordinator that cannot answer
 *   (UNAVAILABLE) answers TIMEOUT too: the write is in the object store already.
 */
import { StrataError } from "../../errors.js";
import type { CoordLink } from "./coord-link.js";
import { parseConfirmReply } from "../wire/coordinator-parsers.js";

interface PendingConfirm {
  location: string;
  epoch: number;
  waiter: { resolve: () => void; reject: (err: unknown) => void };
}

export class Confirms {
  private queue: PendingConfirm[] = [];
  private scheduled = false;

  constructor(
    private readonly link: CoordLink,
    private readonly batchMax: number,
    /** The ownership's counters, counted here: requests made, and writes answered stale. */
    private readonly counters: { confirms: number; staleConfirms: number },
    /** `location` turned out not to be held under `epoch` any more. */
    private readonly onStale: (location: string, epoch: number) => void,
  ) {}

  /** Resolves once the coordinator confirmed `location` is held under `epoch`; see the invariants. */
  confirm(location: string, epoch: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.queue.push({ location, epoch, waiter: { resolve, reject } });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => void this.flush());
      }
    });
  }

  private async flush(): Promise<void> {
    this.scheduled = false;
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, this.batchMax);
      this.counters.confirms += 1;
      let stale: Set<string>;
      try {
        stale = new Set(parseConfirmReply(await this.link.request("confirm", { epochs: batch.map((c) => [c.location, c.epoch]) })).stale);
      } catch (err) {
        const e = StrataError.is(err, "UNAVAILABLE") ? new StrataError("TIMEOUT", `the coordinator could not confirm this server still holds the location (${(err as Error).message}); the write is in the object store and may or may not be part of the location's history`) : err;
        for (const c of batch) c.waiter.reject(e);
        continue;
      }
      for (const c of batch) {
        if (stale.has(c.location)) {
          this.counters.staleConfirms += 1;
          this.onStale(c.location, c.epoch);
          c.waiter.reject(movedWhileWriting(c.location));
        } else {
          c.waiter.resolve();
        }
      }
    }
  }
}

/** The answer to a write whose location moved away before it was confirmed. */
export function movedWhileWriting(location: string): StrataError {
  return new StrataError("TIMEOUT", `location "${location}" moved to another server while this write was committed; it may or may not be part of the location's history (retry with the same msgId to apply it exactly once)`);
}

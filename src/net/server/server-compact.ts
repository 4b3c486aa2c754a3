/**
 * The server's answer to `P.s.<id>.compact` (`strata compact --server ID`): it runs
 * `store.compact({ sealActive: !dryRun, all: true, dryRun })` and replies with the CompactReport
 * (net/wire/compact-wire.ts), or with an error reply (code + message headers).
 *
 * Invariants:
 * - At most one requested compaction runs at a time: a request while one runs is refused at once
 *   with UNAVAILABLE (saying since when it runs), not queued, so repeated requests cannot pile up
 *   work or memory. (The store itself also runs one compaction at a time; a requested one waits
 *   for a background one to finish, compact.ts.)
 * - The answer comes within `compactRequestMs` (TIMEOUT after it). The compaction is not stopped
 *   then, only the wait: it is crash-safe at every step, so stopping it gains nothing; the slot
 *   stays taken until it really ends.
 * - Replies go only to subjects in the inbox namespace (subjects.ts `replyClient`), like every
 *   other reply of the server; a request without such a reply subject is dropped unanswered and
 *   starts nothing.
 * - Once the server stops, requests are refused (UNAVAILABLE); one in flight ends with the store.
 */
import type { Msg } from "nats";
import { StrataError } from "../../errors.js";
import type { Logger } from "../../logger.js";
import type { Store } from "../../store.js";
import { parseCompactRequest } from "../wire/compact-wire.js";
import type { NetLimits } from "../wire/net-limits.js";
import { replyClient } from "../wire/subjects.js";
import { decodeUntrusted, encode } from "../wire/wire-codec.js";
import type { Replies } from "./server-replies.js";

export interface CompactRequestsOptions {
  id: string;
  store: Store;
  replies: Replies;
  limits: Pick<NetLimits, "compactRequestMs">;
  inboxPrefix: string;
  logger: Logger;
}

export class CompactRequests {
  /** When the compaction in progress was asked for (ms since the epoch), if one is. */
  private runningSince: number | undefined;
  private stopped = false;
  /** Requests dropped because their reply subject lies outside the inbox namespace. */
  refused = 0;

  constructor(private readonly o: CompactRequestsOptions) {}

  onRequest(err: Error | null, msg: Msg): void {
    if (err) return this.o.logger.warn({ event: "subscription_error", class: "compact", error: err.message }, `subscription error on the compact subject: ${err.message}`);
    if (!msg.reply || replyClient(msg.reply, this.o.inboxPrefix) === undefined) {
      this.refused += 1;
      return;
    }
    void this.handle(msg.reply, msg.data);
  }

  /** Refuses requests from now on (the server is stopping). */
  stop(): void {
    this.stopped = true;
  }

  private async handle(reply: string, data: Uint8Array): Promise<void> {
    try {
      const { dryRun } = parseCompactRequest(decodeUntrusted(data, "a compact request"));
      if (this.stopped) throw new StrataError("UNAVAILABLE", `server "${this.o.id}" is shutting down; ask again once it runs`);
      if (this.runningSince !== undefined) {
        const seconds = Math.round((Date.now() - this.runningSince) / 1000);
        throw new StrataError(
          "UNAVAILABLE",
          `server "${this.o.id}" is already compacting (asked ${seconds} s ago, at ${new Date(this.runningSince).toISOString()}); wait for it to finish, then ask again`,
        );
      }
      this.runningSince = Date.now();
      let answered = true;
      // Through an async function: even a synchronous throw must end as a settled promise (and free the slot).
      // A dry run does not seal (sealing writes a segment): it leaves the active segment out.
      const work = (async () => this.o.store.compact({ sealActive: !dryRun, all: true, dryRun }))();
      // The slot is free only when the compaction really ends, whatever the wait below does; an
      // outcome nobody waits for any more goes to the server's log.
      void work.then(
        (r) => {
          this.runningSince = undefined;
          if (!answered) this.o.logger.warn({ event: "compaction_finished_late", runs: r.runs, droppedBytes: r.droppedBytes, reclaimedSegments: r.reclaimedSegments }, `the requested compaction finished after its request timed out: ${r.runs} run(s), ${r.droppedBytes} bytes dropped, ${r.reclaimedSegments} segment(s) reclaimed`);
        },
        (e: unknown) => {
          this.runningSince = undefined;
          if (!answered) this.o.logger.warn({ event: "compaction_failed_late", error: (e as Error)?.message ?? String(e) }, `the requested compaction failed after its request timed out: ${(e as Error)?.message ?? String(e)}`);
        },
      );
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), this.o.limits.compactRequestMs)));
      const report = await Promise.race([work, timeout]).finally(() => clearTimeout(timer));
      if (report === "timeout") {
        answered = false;
        throw new StrataError(
          "TIMEOUT",
          `the compaction on server "${this.o.id}" did not finish within compactRequestMs (${this.o.limits.compactRequestMs} ms); it goes on (its outcome goes to the server's log), and compact requests are refused until it ends`,
        );
      }
      this.o.replies.publish(reply, encode(report));
    } catch (e) {
      if (!(e instanceof StrataError)) this.o.logger.error({ event: "compaction_failed", error: (e as Error)?.message ?? String(e), stack: (e as Error)?.stack }, `the requested compaction failed: ${(e as Error)?.stack ?? String(e)}`);
      this.o.replies.error(reply, e);
    }
  }
}

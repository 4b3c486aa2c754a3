/**
 * The cold tier's upload loop (./tier.ts owns what an upload does): ships the queued sealed
 * segments in order, one at a time, and decides what a failure means.
 *
 * Invariants it keeps:
 * - One upload at a time, in queue order (`pending`, shared with the tier, which appends sealed
 *   segments and takes quarantined ones off its head).
 * - A transient failure (object store down, a read error) is retried with backoff (../backoff.ts,
 *   from UPLOAD_RETRY_FIRST_MS doubling up to `uploadRetryMaxMs`) until it succeeds or the tier
 *   closes; the first failure of a run is logged once (`upload_retry`), and the recovery too
 *   (`upload_recovered`). A permanent failure is not retried: it is handed to the tier to
 *   quarantine, and the segments after it go on being shipped.
 * - A failure of the loop itself (only a bug gets there) restarts it after the longest backoff,
 *   never at once (that would spin on the same failure and starve the process).
 * - `wake` cuts a retry wait short (the tier calls it on close).
 */
import { backoff } from "../backoff.js";
import { WakeableSleep } from "../wakeable-sleep.js";
import { errorFields, type Logger } from "../logger.js";
import type { Limits } from "../limits.js";
import { isPermanent } from "./ship-faults.js";

export interface UploadLoopHooks {
  /** Ships one segment; false when it was quarantined for a conflict instead (and taken off `pending`). */
  upload: (seg: number) => Promise<boolean>;
  /** `seg` can never be shipped (`err` is permanent): quarantine it (taking it off `pending`). */
  permanent: (seg: number, err: unknown) => void;
  /** The queue emptied. */
  drained: () => void;
  /** Whether the tier closed: no upload starts any more. */
  closed: () => boolean;
  /** An upload (or the loop) failed: the tier counts it. */
  failed: () => void;
  logger: Logger;
}

export class UploadLoop {
  /** The running loop, while one runs. */
  uploading: Promise<void> | undefined;
  /** Whether uploads are failing now (the last attempt failed and none succeeded since). */
  failing = false;
  /** The wait between retries, which close ends early. */
  private readonly retryWait = new WakeableSleep();

  constructor(
    /** Sealed segments waiting to be shipped, in log order (the tier's array, shared). */
    private readonly pending: number[],
    private readonly limits: Pick<Limits, "uploadRetryMaxMs">,
    private readonly hooks: UploadLoopHooks,
  ) {}

  /** Starts the loop unless it runs, the tier closed or nothing waits. */
  kick(): void {
    if (this.uploading || this.hooks.closed() || this.pending.length === 0) return;
    this.uploading = this.run().then(
      () => {
        this.uploading = undefined;
        this.kick();
      },
      (err: unknown) => {
        // Only a bug gets here (the loop handles every upload error). Restarting at once would
        // spin on the same failure and starve the process; wait the longest backoff first.
        this.uploading = undefined;
        this.hooks.failed();
        setTimeout(() => this.kick(), this.limits.uploadRetryMaxMs).unref();
        try {
          this.hooks.logger.error({ event: "upload_loop_failed", restartMs: this.limits.uploadRetryMaxMs, ...errorFields(err) }, `the upload loop failed (${(err as Error)?.message ?? String(err)}); it restarts in ${this.limits.uploadRetryMaxMs} ms`);
        } catch {
          // The warning hook is what failed; the restart above is already scheduled.
        }
      },
    );
  }

  /** Cuts a retry wait short (close). */
  wake(): void {
    this.retryWait.wake();
  }

  private async run(): Promise<void> {
    const maxMs = this.limits.uploadRetryMaxMs;
    const delays = backoff({ initialMs: Math.min(UPLOAD_RETRY_FIRST_MS, maxMs), maxMs });
    while (this.pending.length > 0 && !this.hooks.closed()) {
      const seg = this.pending[0]!;
      try {
        if (!(await this.hooks.upload(seg))) continue; // quarantined (and taken off `pending`)
        this.pending.shift();
        if (this.pending.length === 0) this.hooks.drained();
        delays.reset();
        if (this.failing) this.hooks.logger.warn({ event: "upload_recovered", segment: seg }, `object store reachable again; uploads caught up to segment ${seg}`);
        this.failing = false;
      } catch (err) {
        this.hooks.failed();
        if (isPermanent(err)) {
          this.hooks.permanent(seg, err);
          continue;
        }
        if (!this.failing) this.hooks.logger.warn({ event: "upload_retry", segment: seg, ...errorFields(err) }, `upload of segment ${seg} failed (${(err as Error).message}); retrying with backoff`);
        this.failing = true;
        await this.retryWait.sleep(delays.next());
      }
    }
  }

}

/** The first pause between upload retries; it doubles up to `uploadRetryMaxMs`. */
const UPLOAD_RETRY_FIRST_MS = 50;

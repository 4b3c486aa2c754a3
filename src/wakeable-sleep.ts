/**
 * A pause that can be cut short. The loops that wait between attempts or steps (the commit
 * queue's index retries, the tier's upload retries, the pacing of segment preparation) each hold
 * one, and their close calls `wake()`, which ends the pause under way at once instead of leaving
 * the close to wait out a timer.
 *
 * Invariant: at most one pause at a time per instance (each loop sleeps, then goes on).
 */
export class WakeableSleep {
  private waking: (() => void) | undefined;

  /** Resolves after `ms`, or as soon as `wake()` is called. */
  sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (): void => {
        clearTimeout(timer);
        if (this.waking === done) this.waking = undefined;
        resolve();
      };
      timer = setTimeout(done, ms);
      this.waking = done;
    });
  }

  /** Ends the pause under way, if any. */
  wake(): void {
    this.waking?.();
  }
}

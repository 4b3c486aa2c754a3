/**
 * A pause that can be cut short. The loops that wait between attempts or steps (the commit
 * queue's index retries, the tier's upload retries, the pacing of segment preparation, a watch's
 * resync and backoff waits) each hold one, and `wake()` ends the pause under way at once: a close
 * need not wait out a timer, and a watch's producer goes on as soon as there is work.
 *
 * Invariant: at most one pause at a time per instance (each loop sleeps, then goes on).
 */
export class WakeableSleep {
  private waking: (() => void) | undefined;

  /** Resolves after `ms` with true, or with false as soon as `wake()` is called. */
  sleep(ms: number): Promise<boolean> {
    return new Promise<boolean>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = (timedOut: boolean): void => {
        clearTimeout(timer);
        if (this.waking === woken) this.waking = undefined;
        resolve(timedOut);
      };
      const woken = (): void => done(false);
      timer = setTimeout(() => done(true), ms);
      this.waking = woken;
    });
  }

  /** Ends the pause under way, if any. */
  wake(): void {
    this.waking?.();
  }
}

/**
 * Driving load: run a fixed number of asynchronous operations with a fixed number in flight,
 * timing the whole and (optionally) each operation.
 */
import type { Histogram } from "hdr-histogram-js";
import { recordMs } from "./stats.js";

/**
 * Runs `op(0) … op(total - 1)` with at most `inFlight` outstanding at once (each of `inFlight`
 * workers starts the next operation as soon as its previous one settles). Resolves to the
 * elapsed milliseconds. After a failure the workers start nothing new; once all have stopped,
 * the first failure rejects.
 */
export async function runInFlight(
  inFlight: number,
  total: number,
  op: (i: number) => Promise<unknown>,
  latencies?: Histogram,
): Promise<number> {
  let next = 0;
  let failed = false;
  const worker = async (): Promise<void> => {
    while (!failed && next < total) {
      const i = next++;
      const t0 = performance.now();
      try {
        await op(i);
      } catch (err) {
        failed = true;
        throw err;
      }
      if (latencies) recordMs(latencies, performance.now() - t0);
    }
  };
  const started = performance.now();
  const workers = Array.from({ length: Math.min(inFlight, total) }, () => worker());
  const settled = await Promise.allSettled(workers);
  const elapsed = performance.now() - started;
  const failure = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
  if (failure) throw failure.reason;
  return elapsed;
}

/** Runs `op(0) … op(total - 1)` one after another; resolves to the elapsed milliseconds. */
export async function runSequential(total: number, op: (i: number) => Promise<unknown>): Promise<number> {
  const started = performance.now();
  for (let i = 0; i < total; i++) await op(i);
  return performance.now() - started;
}

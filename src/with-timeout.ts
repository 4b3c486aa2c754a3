/**
 * A promise bounded in time: `work`'s outcome, or a StrataError (default UNAVAILABLE, retryable)
 * once `ms` have passed. The work itself goes on; only the wait ends. The timer never outlives it.
 */
import { StrataError, type ErrorCode } from "./errors.js";

export function withTimeout<T>(work: Promise<T>, ms: number, what: string, code: ErrorCode = "UNAVAILABLE"): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new StrataError(code, `${what} did not finish within ${ms} ms`)), ms);
  });
  return Promise.race([work, timeout]).finally(() => clearTimeout(timer));
}

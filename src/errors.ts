/**
 * The one error class of Strata's public surface.
 *
 * Two kinds of failure exist (see STYLE.md): programmer errors, which are caught by `assert()`
 * and crash loudly, and what the world does (bad input, a disk that fills up, an object store
 * that goes away), which becomes a `StrataError`. Its `code` is stable and is what callers and
 * the wire protocol branch on; messages may change between releases, codes may not.
 */

export const ERROR_CODES = [
  "INVALID_LOCATION",
  "INVALID_KEY",
  "INVALID_ARGUMENT",
  "WRONG_KIND",
  "CONFLICT",
  "TOO_LARGE",
  // A per-location limit (`config`: maxMsgs, maxBytes with discard "new", maxMsgBytes) refuses the
  // write; nothing was written. Not retryable as is: free room first (delete) or raise the limit.
  "LIMIT",
  "FORBIDDEN",
  "UNAVAILABLE",
  "TIMEOUT",
  // To a server: its incarnation is over (its lease ended or a newer one registered); it must
  // stop serving, register again and claim anew. Not retryable: the same request can never pass.
  "FENCED",
  "CLOSED",
  "CORRUPT",
  "IO",
  "INTERNAL",
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** Codes after which the same request may succeed if simply sent again. */
const RETRYABLE: ReadonlySet<ErrorCode> = new Set<ErrorCode>(["UNAVAILABLE", "TIMEOUT", "IO"]);

export interface StrataErrorOptions {
  cause?: unknown;
  retryable?: boolean;
}

export class StrataError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, options: StrataErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "StrataError";
    this.code = code;
    this.retryable = options.retryable ?? RETRYABLE.has(code);
  }

  static is(err: unknown, code?: ErrorCode): err is StrataError {
    return err instanceof StrataError && (code === undefined || err.code === code);
  }
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && (ERROR_CODES as readonly string[]).includes(value);
}

/** Wraps an unexpected I/O failure so it travels as a StrataError with the OS error as cause. */
export function ioError(what: string, cause: unknown): StrataError {
  const detail = cause instanceof Error ? cause.message : String(cause);
  return new StrataError("IO", `${what} failed: ${detail}. Check the disk (space, permissions) and retry.`, {
    cause,
  });
}

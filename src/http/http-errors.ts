/**
 * How a failure becomes an HTTP answer: a `StrataError` code maps to one status (the table below,
 * also in the README and the OpenAPI document), with the JSON body `{ code, message }`. The gateway's
 * own refusals (no route, no token, a bad header) are `HttpError`s with their own stable codes.
 *
 * Invariants: the body of an error is always `{ code, message }` JSON; a 503 always carries
 * `Retry-After`; an error that is not a StrataError or HttpError (a bug) answers 500 INTERNAL
 * without its message or stack, which go to the gateway's warning callback instead.
 */
import { StrataError, type ErrorCode } from "../errors.js";

/** Codes the gateway itself answers with, besides the StrataError codes. */
export type GatewayCode = "NOT_FOUND" | "UNAUTHORIZED" | "PRECONDITION_FAILED" | "NOT_ACCEPTABLE" | "BUSY" | "METHOD_NOT_ALLOWED";

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: GatewayCode | ErrorCode,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "HttpError";
  }
}

/** The HTTP status of each StrataError code. CONFLICT is 412 instead when the request had a precondition. */
export const STATUS_OF_CODE: Readonly<Record<ErrorCode, number>> = Object.freeze({
  INVALID_LOCATION: 400,
  INVALID_KEY: 400,
  INVALID_ARGUMENT: 400,
  WRONG_KIND: 409,
  CONFLICT: 409,
  TOO_LARGE: 413,
  LIMIT: 409,
  FORBIDDEN: 403,
  UNAVAILABLE: 503,
  TIMEOUT: 504,
  FENCED: 503,
  CLOSED: 503,
  CORRUPT: 500,
  IO: 503,
  INTERNAL: 500,
});

export interface ErrorAnswer {
  status: number;
  headers: Record<string, string>;
  body: { code: string; message: string };
}

/**
 * The answer for `err`. `precondition`: the request carried If-Match / If-None-Match, so a
 * CONFLICT means the precondition failed (412).
 */
export function errorAnswer(err: unknown, options: { precondition?: boolean; retryAfterSeconds: number; onInternal?: (err: unknown) => void }): ErrorAnswer {
  const headers: Record<string, string> = {};
  if (err instanceof HttpError) {
    if (err.status === 503) headers["retry-after"] = String(options.retryAfterSeconds);
    return { status: err.status, headers: { ...headers, ...err.headers }, body: { code: err.code, message: err.message } };
  }
  if (StrataError.is(err)) {
    let status = STATUS_OF_CODE[err.code] ?? 500;
    if (err.code === "CONFLICT" && options.precondition) status = 412;
    if (status === 503) headers["retry-after"] = String(options.retryAfterSeconds);
    if (status === 500) options.onInternal?.(err);
    return { status, headers, body: { code: err.code, message: err.message } };
  }
  options.onInternal?.(err);
  return { status: 500, headers, body: { code: "INTERNAL", message: "the gateway failed unexpectedly; see its log" } };
}

/** A Response for `answer` (JSON body). */
export function errorResponse(answer: ErrorAnswer): Response {
  return new Response(JSON.stringify(answer.body), { status: answer.status, headers: { ...answer.headers, "content-type": "application/json" } });
}

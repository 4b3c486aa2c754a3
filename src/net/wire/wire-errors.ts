/**
 * Errors on the wire: a failed request is answered with an empty body and two headers,
 * `Strata-Error: <CODE>` and `Strata-Message: <text>`. The client turns them back into a
 * StrataError with the same code, carrying the stack of the caller's call site rather than of the
 * reply handler. NATS-level failures (timeout, no responders, permissions) get codes and hints.
 */
import { headers as natsHeaders, type Msg, type MsgHdrs } from "nats";
import { isErrorCode, StrataError, type ErrorCode } from "../../errors.js";

export const ERROR_HEADER = "Strata-Error";
export const MESSAGE_HEADER = "Strata-Message";

const MESSAGE_BYTES_MAX = 2048;

/** The headers of an error reply. Anything that is not a StrataError is reported as INTERNAL. */
export function errorHeaders(err: unknown): MsgHdrs {
  const h = natsHeaders();
  const e = toStrataError(err);
  h.set(ERROR_HEADER, e.code);
  // Header values may not contain line breaks; keep the text readable and bounded.
  h.set(MESSAGE_HEADER, e.message.replace(/[\r\n]+/g, " ").slice(0, MESSAGE_BYTES_MAX));
  return h;
}

export function toStrataError(err: unknown): StrataError {
  if (err instanceof StrataError) return err;
  const detail = err instanceof Error ? err.message : String(err);
  return new StrataError("INTERNAL", `internal error in the strata server: ${detail}`, { cause: err });
}

/** True for the empty 503 status message nats-server sends when nobody subscribes to a request subject. */
export function isNoResponders(msg: Msg): boolean {
  return msg.data.byteLength === 0 && msg.headers?.code === 503;
}

/** The StrataError an error reply carries, or undefined for a normal reply. */
export function errorOfReply(msg: Msg, describe: () => string): StrataError | undefined {
  const h = msg.headers;
  if (!h) return undefined;
  if (isNoResponders(msg)) return unavailable(describe());
  const code = h.get(ERROR_HEADER);
  if (code === "") return undefined;
  return errorFromWire(code, h.get(MESSAGE_HEADER));
}

/** The StrataError of a code and message sent by a server (unknown codes become INTERNAL). */
export function errorFromWire(code: string, message: string): StrataError {
  const text = message || "the strata server reported an error without a message";
  return new StrataError(isErrorCode(code) ? code : "INTERNAL", isErrorCode(code) ? text : `${code}: ${text}`);
}

export function unavailable(what: string): StrataError {
  return new StrataError(
    "UNAVAILABLE",
    `no strata server answered for ${what} (no responders); check that a server is running with this prefix and id, or that the coordinator is up`,
  );
}

export function timeoutError(what: string, ms: number, write: boolean): StrataError {
  const hint = write
    ? " A write may or may not have been applied; use msgId on appends to retry exactly once."
    : " The server may be overloaded or down; retry later.";
  return new StrataError("TIMEOUT", `no reply for ${what} within ${ms} ms.${hint}`);
}

export function forbidden(subject: string): StrataError {
  return new StrataError("FORBIDDEN", `nats-server refused this connection access to "${subject}" (permissions violation)`);
}

/** Maps an error from nats.js (closed connection, payload too large, …) to a StrataError. */
export function fromNatsError(err: unknown, what: string): StrataError {
  if (err instanceof StrataError) return err;
  const code = (err as { code?: string } | undefined)?.code;
  const detail = err instanceof Error ? err.message : String(err);
  const map: Record<string, ErrorCode> = {
    CONNECTION_CLOSED: "CLOSED",
    CONNECTION_DRAINING: "CLOSED",
    MAX_PAYLOAD_EXCEEDED: "TOO_LARGE",
    PERMISSIONS_VIOLATION: "FORBIDDEN",
    TIMEOUT: "TIMEOUT",
    "503": "UNAVAILABLE",
  };
  const mapped = code !== undefined ? map[code] : undefined;
  return new StrataError(mapped ?? "UNAVAILABLE", `${what}: ${detail}`, { cause: err });
}

/** Gives a rebuilt error the stack of the caller's call site, captured when the call began. */
export function withCallerStack(err: StrataError, site: Error | undefined): StrataError {
  if (site?.stack) {
    const frames = site.stack.split("\n").slice(1).join("\n");
    err.stack = `${err.name}: ${err.message}\n${frames}`;
  }
  return err;
}

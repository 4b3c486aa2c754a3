/**
 * The logger Strata's library code writes to, and the one the CLI makes.
 *
 * Library code never writes to the console: it logs through the `Logger` passed in its options
 * (`Store.open`, `startServer`, `startCoordinator`) and, given none, logs nothing (`silentLogger`).
 * `Logger` is the subset of pino's logger the code uses, so a pino logger (or any object with the
 * same methods) can be passed as is.
 *
 * Every warning is one event: `logger.warn({ event: "torn_tail_cut", segment, offset, bytes }, msg)`.
 * `event` is a stable snake_case name an operator can alert on; the other fields are the facts;
 * the message is for people and may change. Event names are listed in the README.
 *
 * The CLI's logger (`createLogger`) writes synchronously to stdout, as JSON lines or, with
 * `format: "pretty"`, through pino-pretty as a synchronous stream (no worker thread): a line is
 * out before the next statement runs, so a ready line is seen as soon as the process is ready and
 * nothing is lost when the process exits.
 */
import { pino, type DestinationStream } from "pino";
import { createRequire } from "node:module";
import { StrataError } from "./errors.js";

/** One log method, called as pino's are: `(fields, message)` or `(message)`. */
export interface LogFn {
  (fields: object, message?: string): void;
  (message: string): void;
}

/** The pino-compatible logger the library writes to. */
export interface Logger {
  trace: LogFn;
  debug: LogFn;
  info: LogFn;
  warn: LogFn;
  error: LogFn;
  /** A logger that adds `bindings` to every event (e.g. `{ component: "tier" }`). */
  child(bindings: Record<string, unknown>): Logger;
}

const noop: LogFn = () => undefined;

/** Logs nothing: what library code uses when its caller passed no logger. */
export const silentLogger: Logger = { trace: noop, debug: noop, info: noop, warn: noop, error: noop, child: () => silentLogger };

export const LOG_LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ["json", "pretty"] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export interface CreateLoggerOptions {
  level?: string;
  format?: string;
  /** Where lines go (default stdout, fd 1); tests pass an in-memory stream. */
  destination?: DestinationStream | NodeJS.WritableStream;
  /** Fields on every line (e.g. `{ server: "s1" }`). */
  base?: Record<string, unknown>;
  /** Colours in pretty output (default: when stdout is a terminal). */
  colorize?: boolean;
}

/** The CLI's logger: JSON lines (default) or pretty text, at `level` (default info). */
export function createLogger(options: CreateLoggerOptions = {}): Logger {
  const level = options.level ?? "info";
  const format = options.format ?? "json";
  if (!(LOG_LEVELS as readonly string[]).includes(level)) {
    throw new StrataError("INVALID_ARGUMENT", `--log-level must be one of ${LOG_LEVELS.join(", ")}, got ${JSON.stringify(level)}`);
  }
  if (!(LOG_FORMATS as readonly string[]).includes(format)) {
    throw new StrataError("INVALID_ARGUMENT", `--log-format must be "json" or "pretty", got ${JSON.stringify(format)}`);
  }
  const settings = { level, base: { pid: process.pid, ...options.base } };
  if (format === "pretty") {
    // Loaded only for pretty output: JSON logging (the default) does not carry it.
    const pretty = createRequire(import.meta.url)("pino-pretty") as typeof import("pino-pretty");
    const stream = pretty({
      sync: true,
      destination: options.destination ?? 1,
      colorize: options.colorize ?? process.stdout.isTTY === true,
      ignore: "pid,hostname",
    });
    return pino(settings, stream);
  }
  return pino(settings, (options.destination as DestinationStream | undefined) ?? pino.destination({ fd: 1, sync: true }));
}

/**
 * A logger for a printer of plain lines (a CLI command's stderr, a benchmark's progress): each
 * warn or error event becomes one call of `print` with `<message> (<event>)`; lower levels are
 * dropped, so a run without trouble prints nothing. Child bindings are dropped too.
 */
export function warningLineLogger(print: (line: string, level: "warn" | "error") => void): Logger {
  const printer =
    (level: "warn" | "error"): LogFn =>
    (first: object | string, message?: string) => {
      const event = typeof first === "string" ? undefined : (first as { event?: unknown }).event;
      const text = typeof first === "string" ? first : (message ?? "");
      print(`${text}${typeof event === "string" ? ` (${event})` : ""}`, level);
    };
  const logger: Logger = { trace: noop, debug: noop, info: noop, warn: printer("warn"), error: printer("error"), child: () => logger };
  return logger;
}

/**
 * Refuses the warning callbacks the library took before it logged events (`onWarning`, and the
 * coordinator's `onEvent`; removed before 1.0) as an unknown option, with a message naming
 * `logger`: a caller still passing one would otherwise never hear of a warning again.
 */
export function refuseWarningCallbacks(options: object, what: string): void {
  for (const name of ["onWarning", "onEvent"]) {
    if (Object.hasOwn(options, name)) {
      throw new StrataError(
        "INVALID_ARGUMENT",
        `unknown ${what} option "${name}": warning callbacks were removed; pass logger (a pino logger, or any object with its methods, src/logger.ts) and read its events (each has an "event" name and fields)`,
      );
    }
  }
}

/** The message of an error of unknown type, for a log field. */
export function errorMessage(err: unknown): string {
  return (err as Error)?.message ?? String(err);
}

/** The fields of a failure on a log event: its message, and its code when it has one. */
export function errorFields(err: unknown): { error: string; code?: string } {
  const code = (err as { code?: unknown } | undefined)?.code;
  return { error: errorMessage(err), ...(typeof code === "string" ? { code } : {}) };
}

/** The fields of one log event: its stable name and the facts. */
export type LogFields = { event: string } & Record<string, unknown>;

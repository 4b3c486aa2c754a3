/**
 * A real pino logger whose lines go to memory, parsed: tests pass `logger` to Store.open,
 * startServer or startCoordinator and assert on the events (`event` name, fields, level) the
 * code logged, through the same serialisation an operator's log gets.
 *
 *   const cap = captureLogger();
 *   const store = await Store.open({ dir, logger: cap.logger });
 *   expect(cap.find("torn_tail_cut")).toMatchObject({ segment: 1, bytes: 17 });
 *
 * `warnings` holds the message of every warn-or-worse event, in order (for a failure message, or
 * where a message is all there is to check); pass arrays of your own (`warnings`, `events`) to
 * collect into them across several loggers.
 */
import { pino } from "pino";
import type { Logger } from "../../src/logger.js";

export interface LogEvent {
  /** pino's numeric level: 10 trace, 20 debug, 30 info, 40 warn, 50 error, 60 fatal. */
  level: number;
  msg: string;
  event?: string;
  [field: string]: unknown;
}

export const WARN_LEVEL = 40;

export interface CapturedLog {
  logger: Logger;
  events: LogEvent[];
  warnings: string[];
  /** The first event named `event`, if any. */
  find(event: string): LogEvent | undefined;
  /** Every event named `event`. */
  all(event: string): LogEvent[];
  /** Resolves with the first event named `event` (already logged or to come); rejects after `timeoutMs`. */
  waitFor(event: string, timeoutMs?: number): Promise<LogEvent>;
}

export function captureLogger(options: { warnings?: string[]; events?: LogEvent[]; level?: string } = {}): CapturedLog {
  const events = options.events ?? [];
  const warnings = options.warnings ?? [];
  const waiters: Array<{ event: string; resolve: (e: LogEvent) => void }> = [];
  const destination = {
    write(line: string): void {
      const e = JSON.parse(line) as LogEvent;
      events.push(e);
      if (e.level >= WARN_LEVEL) warnings.push(e.msg);
      for (const w of waiters.splice(0)) {
        if (w.event === e.event) w.resolve(e);
        else waiters.push(w);
      }
    },
  };
  const logger = pino({ level: options.level ?? "trace", base: undefined }, destination);
  const find = (event: string) => events.find((e) => e.event === event);
  return {
    logger,
    events,
    warnings,
    find,
    all: (event) => events.filter((e) => e.event === event),
    waitFor(event, timeoutMs = 10_000) {
      const seen = find(event);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no "${event}" log event within ${timeoutMs} ms; got ${JSON.stringify(events.map((e) => e.event ?? e.msg))}`)), timeoutMs);
        waiters.push({
          event,
          resolve: (e) => {
            clearTimeout(timer);
            resolve(e);
          },
        });
      });
    },
  };
}

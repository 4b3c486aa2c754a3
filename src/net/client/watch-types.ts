/**
 * The shapes around a watch (./watch.ts): what a Watcher needs from the client (`WatchDeps`), the
 * synchronous consumer the kv cache plugs in instead of the iterator (`WatchSink`), and the async
 * iterable `watch()` returns (`Watch`).
 */
import type { StrataError } from "../../errors.js";
import type { Change } from "../../types.js";
import type { Caller } from "./client-call.js";
import type { Transport } from "./client-transport.js";
import type { ClientLimits } from "../wire/net-limits.js";

export interface WatchDeps {
  caller: Caller;
  transport: Transport;
  prefix: string;
  limits: ClientLimits;
  /** Watches in progress, so that closing the client stops them. */
  watches: Set<Watch>;
}

/**
 * A consumer called synchronously from inside the watcher, in this order of events: changes, then
 * the position they bring the watch to. No output queue: the sink must not block.
 */
export interface WatchSink {
  /** A change to show, in commit order. */
  change(change: Change): void;
  /** Every change up to `revision` has been shown (or skipped as a repeat of the replay). */
  position(revision: number): void;
  /**
   * Nothing past the position was left to show when the server was last heard from, at `at` (ms,
   * Date.now()): a catch-up reply with nothing more (`at`: when it was asked), or live changes all
   * shown (`at`: when the last one arrived).
   */
  caughtUp(revision: number, at: number): void;
  /** A new owner's history differs past `since` from what was shown: the changes past it are void. */
  rewound(since: number): void;
  /** The watch ended: stopped, or failed with `err`. */
  ended(err: StrataError | undefined): void;
}

/** The async iterable a watch() returns: break / return() or stop() ends it. */
export interface Watch<T = Change> extends AsyncIterableIterator<T> {
  stop(): void;
  /**
   * Resolves once the server accepted the watch's first request (its replay answered), or when
   * the watch is stopped before that; rejects with the error that ended the watch before that
   * (FORBIDDEN, WRONG_KIND, a start the server refuses). Retried failures (server unreachable)
   * leave it pending. Nobody has to await it.
   */
  readonly started: Promise<void>;
}

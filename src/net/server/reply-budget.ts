/**
 * The byte budget of everything a server holds to answer reads (`replyBytesInFlightMax`).
 *
 * What counts: holds (bytes reserved by replies being built: a get's value and its encoded copy,
 * a batch's values, the standing hold of each reply stream) plus the bytes published and not yet
 * taken by nats-server (outbound-meter.ts). A reservation is granted only while
 * `held + pending + n <= limit`; otherwise it waits (in order of arrival, but a smaller one that
 * fits may pass a larger one) for up to `replyBudgetWaitMs`, then fails with UNAVAILABLE, which
 * clients retry. So however many readers ask and however slowly they read, the server holds at
 * most the budget (plus one message of each reply that is being published), never a queue.
 *
 * Reply streams hold their standing reservation from a pool of at most half the budget, so that
 * readers who open streams and never grant credit cannot take the room one-message replies
 * (a get, a health probe) need.
 *
 * Small replies travel apart. nats-server makes a connection that publishes to a reader who does
 * not read wait ("slow consumer" stalls), and so everything queued behind on that connection: a
 * server with one connection would answer nobody while a hostile reader is stalling it. So large
 * replies and reply streams go on a bulk connection (outbound meter `bulk`), and small replies
 * (at most SMALL_REPLY_BYTES) on the main one, from a pool of their own (an eighth of the budget,
 * counting only the main connection's pending bytes): a stalled bulk connection does not hold up
 * a get of a small value, a write's answer or a health probe.
 *
 * Invariants: held = sum of live holds of "reply"/"stream"; streamHeld <= limit / 2;
 * smallHeld + main pending <= limit / 8 at every grant; a hold is released once.
 */
import { StrataError } from "../../errors.js";
import { OutboundMeter } from "./outbound-meter.js";

export type Pool = "small" | "reply" | "stream";

/** Replies of at most this many bytes go on the main connection (see the file comment). */
export const SMALL_REPLY_BYTES = 16 * 1024;

export interface Hold {
  readonly bytes: number;
  release(): void;
}

interface Waiter {
  bytes: number;
  pool: Pool;
  resolve: (hold: Hold) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

const NO_HOLD: Hold = Object.freeze({ bytes: 0, release() {} });

export class ReplyBudget {
  private held = 0;
  private streamHeld = 0;
  private smallHeld = 0;
  private waiters: Waiter[] = [];
  /** Most bytes held + pending at once, and how many reservations were refused. */
  usedHighWater = 0;
  refused = 0;

  constructor(
    readonly limitBytes: number,
    private readonly waitMs: number,
    /** Bytes published on the main connection (small replies) and on the bulk one. */
    readonly main: OutboundMeter,
    readonly bulk: OutboundMeter,
  ) {}

  /** Bytes counted against the budget now (both pools). */
  used(): number {
    return this.held + this.smallHeld + this.main.pending() + (this.bulk === this.main ? 0 : this.bulk.pending());
  }

  /** Most bytes one reservation of `pool` can ever get. */
  poolMax(pool: Pool): number {
    return pool === "stream" ? Math.floor(this.limitBytes / 2) : pool === "small" ? Math.floor(this.limitBytes / 8) : this.limitBytes;
  }

  /** Whether a reservation of `bytes` from `pool` would be granted right now. */
  fits(bytes: number, pool: Pool): boolean {
    if (pool === "small") return this.smallHeld + this.main.pending() + bytes <= this.poolMax("small");
    if (this.held + this.bulk.pending() + bytes > this.limitBytes) return false;
    return pool !== "stream" || this.streamHeld + bytes <= this.poolMax("stream");
  }

  /** Reserves `bytes`, waiting for room for up to `replyBudgetWaitMs`; then UNAVAILABLE. */
  reserve(bytes: number, pool: Pool = "reply"): Promise<Hold> {
    if (bytes <= 0) return Promise.resolve(NO_HOLD);
    if (bytes > this.poolMax(pool)) {
      return Promise.reject(
        new StrataError("TOO_LARGE", `a reply needs ${bytes} bytes, more than the server's reply budget allows (replyBytesInFlightMax ${this.limitBytes}); the operator should raise replyBytesInFlightMax`),
      );
    }
    if (this.fits(bytes, pool)) return Promise.resolve(this.take(bytes, pool));
    // Room may be held only by published bytes whose flush is waiting (outbound-meter.ts).
    this.main.flushNow();
    if (this.bulk !== this.main) this.bulk.flushNow();
    return new Promise<Hold>((resolve, reject) => {
      const waiter: Waiter = {
        bytes,
        pool,
        resolve,
        reject,
        timer: setTimeout(() => {
          this.waiters = this.waiters.filter((w) => w !== waiter);
          this.refused += 1;
          reject(
            new StrataError(
              "UNAVAILABLE",
              `the server is holding ${this.used()} bytes of replies for slow readers (replyBytesInFlightMax ${this.limitBytes}) and found no room within ${this.waitMs} ms; retry shortly`,
            ),
          );
        }, this.waitMs),
      };
      this.waiters.push(waiter);
    });
  }

  /** Grants waiting reservations that fit now, oldest first (called when bytes were freed). */
  wake(): void {
    if (this.waiters.length === 0) return;
    const still: Waiter[] = [];
    for (const w of this.waiters) {
      if (this.fits(w.bytes, w.pool)) {
        clearTimeout(w.timer);
        w.resolve(this.take(w.bytes, w.pool));
      } else {
        still.push(w);
      }
    }
    this.waiters = still;
  }

  /** Fails every waiting reservation (server shutdown). */
  abortAll(err: StrataError): void {
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(err);
    }
  }

  stats(): { replyBytesHeld: number; replyBytesPending: number; replyBytesHighWater: number; replyBudgetRefused: number } {
    const pending = this.used() - this.held - this.smallHeld;
    return { replyBytesHeld: this.held + this.smallHeld, replyBytesPending: pending, replyBytesHighWater: this.usedHighWater, replyBudgetRefused: this.refused };
  }

  private take(bytes: number, pool: Pool): Hold {
    if (pool === "small") this.smallHeld += bytes;
    else this.held += bytes;
    if (pool === "stream") this.streamHeld += bytes;
    const used = this.used();
    if (used > this.usedHighWater) this.usedHighWater = used;
    let live = true;
    return {
      bytes,
      release: () => {
        if (!live) return;
        live = false;
        if (pool === "small") this.smallHeld -= bytes;
        else this.held -= bytes;
        if (pool === "stream") this.streamHeld -= bytes;
        this.wake();
      },
    };
  }
}

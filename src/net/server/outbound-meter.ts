/**
 * How many bytes the server has published that nats-server has not taken yet.
 *
 * nats.js buffers every publish without bound (its outbound buffer, then the socket's), so a
 * server that publishes faster than nats-server reads (a reader that does not read makes
 * nats-server slow down the whole connection) would grow without limit. nats.js has no public
 * count of those bytes; what it does offer is `flush()`, a PING whose PONG comes back once
 * nats-server has processed everything published before it. So: count the bytes published, and
 * keep one flush in flight while any are outstanding; when it returns, everything counted before
 * it has left this process (and the kernel's buffers). `pending()` is thus an upper bound of the
 * bytes this process and its socket hold for nats-server, never an undercount.
 *
 * A flush is a PING and a PONG through nats-server, and the PING also pushes out what nats.js had
 * queued for its next write: one per reply at one request in flight would add a round of protocol
 * work to every request (and a socket write of its own). So while fewer than `eagerBytes` are
 * pending, the flush waits up to `delayMs` (more replies join it); past `eagerBytes`, or when
 * someone waits for room (`flushNow`), it goes at once. Pending bytes are then over-counted by at
 * most `eagerBytes` for at most `delayMs`, never under-counted (limits: replyFlushEagerBytesMax,
 * replyFlushDelayMs).
 *
 * Invariant: 0 <= flushed <= published; at most one flush in flight.
 */
import type { NatsConnection } from "nats";

/** Bytes a published message costs besides its payload (the PUB line, subjects, CRLFs). */
const MESSAGE_OVERHEAD_BYTES = 128;
/** Pause before asking again when a flush failed on a connection that is not closed (reconnecting). */
const RETRY_MS = 50;

export class OutboundMeter {
  private published = 0;
  private flushed = 0;
  private flushing = false;
  private retry: NodeJS.Timeout | undefined;
  private lazy: NodeJS.Timeout | undefined;
  /** Most bytes ever pending at once (for stats and tests). */
  pendingHighWater = 0;

  constructor(
    private readonly nc: NatsConnection,
    /** Called whenever pending bytes went down. */
    private readonly onDrained: () => void,
    /** Pending bytes below which a flush waits up to `delayMs` (0: every publish is flushed at once). */
    private readonly eagerBytes = 0,
    private readonly delayMs = 10,
  ) {}

  pending(): number {
    return this.published - this.flushed;
  }

  /** Counts a message of `payloadBytes` just published. */
  add(payloadBytes: number): void {
    this.published += payloadBytes + MESSAGE_OVERHEAD_BYTES;
    const pending = this.pending();
    if (pending > this.pendingHighWater) this.pendingHighWater = pending;
    this.schedule();
  }

  /** Flushes at once past `eagerBytes`, else within `delayMs` (a flush in flight reschedules when it returns). */
  private schedule(): void {
    if (this.pending() >= this.eagerBytes) return this.kick();
    if (this.lazy !== undefined || this.flushing || this.retry !== undefined || this.published === this.flushed) return;
    this.lazy = setTimeout(() => this.kick(), this.delayMs);
    this.lazy.unref();
  }

  /** Flushes what is pending now, without the lazy wait (someone waits for room in the budget). */
  flushNow(): void {
    this.kick();
  }

  stop(): void {
    clearTimeout(this.retry);
    this.retry = undefined;
    clearTimeout(this.lazy);
    this.lazy = undefined;
  }

  private kick(): void {
    clearTimeout(this.lazy);
    this.lazy = undefined;
    if (this.flushing || this.retry !== undefined || this.published === this.flushed) return;
    this.flushing = true;
    const mark = this.published;
    let flush: Promise<void>;
    try {
      flush = this.nc.flush();
    } catch (err) {
      flush = Promise.reject(err);
    }
    flush.then(
      () => this.settle(mark),
      () => {
        // A closed connection dropped its buffers: nothing is held for it any more. Otherwise
        // (a reconnect in progress) ask again shortly; the bytes are still buffered.
        if (this.nc.isClosed()) return this.settle(this.published);
        this.flushing = false;
        this.retry = setTimeout(() => {
          this.retry = undefined;
          this.kick();
        }, RETRY_MS);
      },
    );
  }

  private settle(mark: number): void {
    this.flushing = false;
    if (mark > this.flushed) this.flushed = mark;
    this.onDrained();
    this.schedule();
  }
}

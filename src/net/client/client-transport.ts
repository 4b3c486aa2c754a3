/**
 * The client's one reply subscription. Every request gets a channel `<inbox>.<n>` under a single
 * wildcard subscription `<inbox>.*`, so a client holds one subscription however many requests,
 * uploads and streamed replies are in flight, and a channel can receive many messages (grants,
 * batches, parts) in order. Messages for channels already closed are dropped.
 *
 * It also watches the connection's status: reconnects are reported to watchers (they refetch what
 * they may have missed), and a publish refused by nats-server permissions fails the channels that
 * were waiting on a reply to that subject with FORBIDDEN instead of letting them time out.
 */
import { createInbox, type Msg, type NatsConnection, type Status, type Subscription } from "nats";
import { StrataError } from "../../errors.js";
import { forbidden, fromNatsError } from "../wire/wire-errors.js";

export class Transport {
  readonly inbox: string;
  private readonly channels = new Map<string, Channel>();
  private readonly sub: Subscription;
  private readonly status: AsyncIterable<Status> & { stop(): void };
  private next = 0;
  private closedError: StrataError | undefined;
  readonly reconnectListeners = new Set<() => void>();

  constructor(
    readonly nc: NatsConnection,
    inboxPrefix?: string,
  ) {
    // Default to the connection's own inbox prefix: permissions are usually written for it.
    this.inbox = createInbox(inboxPrefix ?? (nc as { options?: { inboxPrefix?: string } }).options?.inboxPrefix);
    this.sub = nc.subscribe(`${this.inbox}.*`, {
      callback: (err, msg) => {
        if (err) return this.failAll(fromNatsError(err, "the client's reply subscription failed"));
        const token = msg.subject.slice(this.inbox.length + 1);
        this.channels.get(token)?.push(msg);
      },
    });
    this.status = nc.status() as AsyncIterable<Status> & { stop(): void };
    void this.watchStatus();
  }

  open(): Channel {
    if (this.closedError) throw this.closedError;
    const token = (this.next++).toString(36);
    const channel = new Channel(this, token, `${this.inbox}.${token}`);
    this.channels.set(token, channel);
    return channel;
  }

  /** Publishes with `channel` as the reply subject; nats.js errors become StrataErrors. */
  publish(subject: string, data: Uint8Array, channel: Channel): void {
    channel.lastSubject = subject;
    try {
      this.nc.publish(subject, data, { reply: channel.subject });
    } catch (err) {
      throw fromNatsError(err, `cannot send to ${subject}`);
    }
  }

  /** @internal */
  forget(channel: Channel): void {
    this.channels.delete(channel.token);
  }

  close(): void {
    this.closedError ??= new StrataError("CLOSED", "the StrataClient is closed");
    this.failAll(this.closedError);
    this.status.stop();
    if (!this.nc.isClosed()) this.sub.unsubscribe();
  }

  private failAll(err: StrataError): void {
    for (const channel of [...this.channels.values()]) channel.fail(err);
  }

  private async watchStatus(): Promise<void> {
    try {
      for await (const s of this.status) {
        if (s.type === "reconnect") for (const listener of this.reconnectListeners) listener();
        const ctx = s.permissionContext;
        if (s.type === "error" && ctx?.operation === "publish") {
          for (const channel of this.channels.values()) if (channel.lastSubject === ctx.subject) channel.fail(forbidden(ctx.subject));
        }
      }
    } catch {
      // the status iterator ends with the connection
    }
  }
}

/** What a wait does while no message comes (Channel.next): `onQuiet()` every `everyMs`. */
export interface Quiet {
  everyMs: number;
  onQuiet(): void;
}

export class Channel {
  lastSubject = "";
  private readonly queue: Msg[] = [];
  private waiter: { resolve: (msg: Msg) => void; reject: (err: Error) => void; timer: NodeJS.Timeout } | undefined;
  private failure: StrataError | undefined;

  constructor(
    private readonly transport: Transport,
    readonly token: string,
    readonly subject: string,
  ) {}

  push(msg: Msg): void {
    const w = this.waiter;
    if (w) {
      this.waiter = undefined;
      clearTimeout(w.timer);
      w.resolve(msg);
    } else {
      this.queue.push(msg);
    }
  }

  /**
   * The next message, or a rejection with `onTimeout()` after `timeoutMs`. With `quiet`, its
   * `onQuiet()` runs every `everyMs` of the wait (as long as more than that is left), on the same
   * one timer, so a reply that comes sooner costs nothing more.
   */
  next(timeoutMs: number, onTimeout: () => StrataError, quiet?: Quiet): Promise<Msg> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<Msg>((resolve, reject) => {
      const waiter = { resolve, reject, timer: undefined as unknown as NodeJS.Timeout };
      const everyMs = quiet !== undefined && quiet.everyMs > 0 && timeoutMs > quiet.everyMs ? quiet.everyMs : 0;
      // One timer and one closure per wait: a quiet interval when more than one is left, else the timeout.
      const end = everyMs > 0 ? Date.now() + timeoutMs : 0;
      const fire = (): void => {
        if (this.waiter !== waiter) return;
        const left = everyMs > 0 ? end - Date.now() : 0;
        if (left <= 0) {
          this.waiter = undefined;
          reject(onTimeout());
          return;
        }
        quiet!.onQuiet();
        if (this.waiter === waiter) waiter.timer = setTimeout(fire, Math.max(1, left > everyMs ? everyMs : left));
      };
      waiter.timer = setTimeout(fire, Math.max(1, everyMs > 0 ? everyMs : timeoutMs));
      this.waiter = waiter;
    });
  }

  fail(err: StrataError): void {
    this.failure ??= err;
    const w = this.waiter;
    if (w) {
      this.waiter = undefined;
      clearTimeout(w.timer);
      w.reject(err);
    }
  }

  close(): void {
    this.transport.forget(this);
    this.queue.length = 0;
  }
}

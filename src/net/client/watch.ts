/**
 * watch(): replay what exists, then follow live changes, in commit order, with no gap and no
 * duplicate, across reconnects and server restarts.
 *
 * 1. Subscribe to the change subject `P.c.<location>` first (and flush, so the server has the
 *    interest), buffering live changes.
 * 2. Replay: a streamed getAll whose items carry the revision that produced them and whose end
 *    frame carries `base`, the location's revision before the scan began. Items are emitted as
 *    `set` changes; those with revision > base were written during the scan and are remembered.
 *    The cursor starts at base.
 * 3. Catch up: `changes { after: cursor }` (store.changesSince) until nothing is left, then follow
 *    the live buffer. A change with revision <= cursor is a duplicate and dropped; cursor + 1 is
 *    emitted; anything higher is a gap and sends us back to 3. An overflowing live buffer, a NATS
 *    reconnect, and an idle period of `watchResyncMs` (a change lost with a crashed server, or a
 *    restarted server) also go back to 3. Failures are retried with backoff and jitter.
 * Merging the replay: a change is skipped when the replay already showed the same or a newer
 * write of that seq / key (./watch-merge.ts: the merge, the filter, the checks of wire changes).
 *
 * Failover (docs/failover.md): change messages and `changes` replies name the epoch the location
 * is held under, and the replies also `since`, the revision that epoch began at. A live message of
 * a higher epoch drops the live buffer and catches up at once; a reply of a higher epoch whose
 * `since` lies below the cursor means the changes past `since` were shown under an older epoch
 * and did not survive the move (writes acknowledged locally by a server that died before shipping
 * them): the cursor rewinds to `since`, so the new owner's changes with those revisions are shown.
 * Each `changes` request names the epoch the watcher was last shown changes under (`shownEpoch`,
 * the highest it knows): an owner two or more moves later answers the lowest start revision of
 * the epochs after that one along the location's lineage (server ownership.ts `sinceFor`), so the
 * changes of an owner in between that the watcher never heard from (which may have lost some of
 * the shown ones and written its own at those revisions) are shown too (./watch-changes.ts, also
 * for servers of an earlier release, which refuse the field).
 * Whenever the epoch goes up, the live buffer (changes of older epochs only) is dropped, and a
 * live message of an older epoch is ignored: a change the old owner published and never shipped
 * must not take the place of the new owner's change of the same revision (the cursor would pass
 * over it, and it would be dropped as a repeat). The catch-up after it reads the new owner's log.
 *
 * Values larger than the server's `changeInlineBytesMax` are left out of the feed (`omitted: true`
 * on the wire, server-changes.ts): when such a change is next to emit, and this watch would show
 * it, one `changes { after: cursor }` request fetches it, with the values of the buffered live
 * changes up to the last omitted one, read from the log by revision (never a get, which could
 * return a newer write of the key). Fetched changes are emitted as in a catch-up, and the live
 * copies are then duplicates. If the server's log has nothing past the cursor, the omitted change
 * is not in it (lost with a server that had not synced it): it is dropped, and the next resync
 * shows what the log holds. A watcher never emits a change without the value the feed left out.
 *
 * A chunked change (too large for one message) carries an empty value and `chunked: true`; read
 * the value with get(). Memory is bounded: the live buffer and the output queue have limits, and a
 * slow consumer pauses the watcher rather than growing a queue.
 *
 * A `WatchSink` (kv-cache.ts) takes the changes synchronously instead of the iterator, and is also
 * told the watch's position, when the server was last heard from with nothing left to show
 * (`caughtUp`), a rewind after a move, and the end of the watch (./watch-types.ts).
 */
import type { Msg, Subscription } from "nats";
import { StrataError } from "../../errors.js";
import type { Change } from "../../types.js";
import { retryDelays } from "./client-call.js";
import { EPOCH_HEADER, changeSubject } from "../wire/subjects.js";
import { decodeUntrusted, type WireMap } from "../wire/wire-codec.js";
import { fromNatsError } from "../wire/wire-errors.js";
import { ChangesRequests } from "./watch-changes.js";
import type { Watch, WatchDeps, WatchSink } from "./watch-types.js";
import { ReplayMerge, idOf, isChange, isOmitted, kvItemChange, streamItemChange, type WatchFilter } from "./watch-merge.js";
import { WakeableSleep } from "../../wakeable-sleep.js";
export type { Watch, WatchDeps, WatchSink } from "./watch-types.js";

export class Watcher implements Watch {
  private readonly out: Change[] = [];
  private readonly live: Change[] = [];
  private liveOverflow = false;
  /** The cursor when a gap last sent us to catch up. */
  private gapCursor = -1;
  private resync = false;
  private cursor = 0;
  /** The highest epoch seen for the location (0: none, or a standalone server). */
  private epoch = 0;
  /** The `changes` requests, with `shownEpoch` (./watch-changes.ts). */
  private readonly changesRequests: ChangesRequests;
  /** The filter, and what the replay showed of writes newer than its base (./watch-merge.ts). */
  private readonly merge: ReplayMerge;
  private sub: Subscription | undefined;
  private stopped = false;
  private failure: StrataError | undefined;
  readonly started: Promise<void>; // Watch.started: the replay's first reply frame, or the end before it
  private settleStart!: (err: StrataError | undefined) => void;
  private consumer: { resolve: (r: IteratorResult<Change>) => void; reject: (e: Error) => void } | undefined;
  /** The producer's wait (backoff, resync, a full buffer), which new work ends early. */
  private readonly producerWait = new WakeableSleep();
  /** When the last live change message arrived. */
  private liveAt = 0;
  private readonly onReconnect = () => {
    this.resync = true;
    this.wakeProducer();
  };

  constructor(
    private readonly deps: WatchDeps,
    readonly location: string,
    private readonly filter: WatchFilter,
    private readonly sink?: WatchSink,
  ) {
    this.merge = new ReplayMerge(filter);
    this.changesRequests = new ChangesRequests(deps.caller, location);
    this.started = new Promise((resolve, reject) => (this.settleStart = (err) => (err ? reject(err) : resolve())));
    this.started.catch(() => {}); // awaited only by those who care (the gateway): never unhandled
  }

  start(): this {
    this.sub = this.deps.transport.nc.subscribe(changeSubject(this.deps.prefix, this.location), {
      callback: (err, msg) => {
        if (err) return this.fail(fromNatsError(err, `watching ${this.location}`));
        this.onLive(msg);
      },
    });
    this.deps.transport.reconnectListeners.add(this.onReconnect);
    this.deps.watches.add(this);
    void this.run();
    return this;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<Change>> {
    const change = this.out.shift();
    if (change) {
      this.wakeProducer();
      return Promise.resolve({ value: change, done: false });
    }
    if (this.failure) return Promise.reject(this.failure);
    if (this.stopped) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => (this.consumer = { resolve, reject }));
  }

  return(): Promise<IteratorResult<Change>> {
    this.stop();
    return Promise.resolve({ value: undefined, done: true });
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.out.length = 0;
    this.live.length = 0;
    this.deps.transport.reconnectListeners.delete(this.onReconnect);
    this.deps.watches.delete(this);
    try {
      this.sub?.unsubscribe();
    } catch {
      // the connection is closed already
    }
    this.consumer?.resolve({ value: undefined, done: true });
    this.consumer = undefined;
    this.wakeProducer();
    this.sink?.ended(this.failure);
    this.settleStart(this.failure);
  }

  /** Ends the watch with an error: the pending next() rejects with it, and so does every later one. */
  private fail(err: StrataError): void {
    if (this.stopped) return;
    this.failure = err;
    const consumer = this.consumer;
    this.consumer = undefined;
    this.stop();
    consumer?.reject(err);
  }

  private async run(): Promise<void> {
    try {
      await this.deps.transport.nc.flush();
      await this.retrying(() => this.replay());
      while (!this.stopped) {
        await this.retrying(() => this.catchUp());
        await this.follow();
      }
    } catch (err) {
      this.fail(err instanceof StrataError ? err : fromNatsError(err, `watching ${this.location}`));
    }
  }

  /** Runs `step` until it succeeds, retrying what the world may fix (server down, timeouts). */
  private async retrying(step: () => Promise<void>): Promise<void> {
    const delays = retryDelays(this.deps.limits);
    while (!this.stopped) {
      try {
        return await step();
      } catch (err) {
        if (!(err instanceof StrataError) || !err.retryable) throw err;
        await this.sleep(delays.next());
      }
    }
  }

  /** The revision before the first replay scan began; every later change is merged against it. */
  private replayBase: number | undefined;
  /** The last seq / key the replay emitted, to resume after a failure without repeating. */
  private replayAfter: number | string | undefined;

  private async replay(): Promise<void> {
    const f = this.filter;
    const body: WireMap =
      f.kind === "stream"
        ? { op: "stream.getAll", startSeq: typeof this.replayAfter === "number" ? this.replayAfter + 1 : f.startSeq }
        : { op: "kv.getAll", ...(f.key !== undefined ? { key: f.key } : {}) };
    const onFrame = (frame: WireMap) => {
      this.settleStart(undefined); // the server accepted the request
      if (this.replayBase === undefined && typeof frame.base === "number") this.replayBase = frame.base;
      if (typeof frame.epoch === "number" && frame.epoch > this.epoch) this.raiseEpoch(frame.epoch);
    };
    const call = { location: this.location, cls: "r" as const, idempotent: true };
    for await (const item of this.deps.caller.items(call, body, onFrame)) {
      if (this.stopped) return;
      const change = f.kind === "stream" ? streamItemChange(this.location, item) : kvItemChange(this.location, item);
      const id = idOf(change);
      // A kv replay resumed after a failure starts over; skip the keys already emitted.
      if (f.kind === "kv" && typeof this.replayAfter === "string" && (id as string) <= this.replayAfter) continue;
      this.replayAfter = id;
      if (change.revision > (this.replayBase ?? 0)) this.merge.remember(id, change.revision);
      await this.emit(change);
    }
    this.cursor = this.replayBase ?? 0;
    this.sink?.position(this.cursor);
  }

  private async catchUp(): Promise<void> {
    this.resync = false;
    for (;;) {
      const asked = Date.now();
      const more = await this.fetch(this.deps.limits.watchChangesPage);
      if (more === false) {
        if (!this.stopped) this.sink?.caughtUp(this.cursor, asked);
        return;
      }
    }
  }

  /**
   * One `changes { after: cursor, limit }` request, its changes processed as fetched (authoritative:
   * a revision the log no longer has is not a gap). Resolves to the reply's `more`, or undefined
   * when a new owner's history rewound the cursor (ask again).
   */
  private async fetch(limit: number): Promise<boolean | undefined> {
    const reply = await this.changesRequests.fetch(this.cursor, limit, this.epoch);
    if (reply.epoch !== undefined && reply.epoch > this.epoch) {
      const shownUnder = this.epoch;
      this.raiseEpoch(reply.epoch);
      // Writes the replay showed past `since` (newer than the cursor) may not have survived either.
      if (shownUnder > 0 && reply.since !== undefined) this.merge.forgetAfter(reply.since);
      if (shownUnder > 0 && reply.since !== undefined && reply.since < this.cursor) {
        // What was shown past `since` did not survive the move: show the new owner's history from there.
        this.cursor = reply.since;
        this.merge.forget();
        this.gapCursor = -1;
        this.sink?.rewound(reply.since);
        return undefined;
      }
    }
    for (const change of reply.changes) {
      if (this.stopped) return false;
      if (isChange(change) && !isOmitted(change)) await this.process(change, true);
    }
    return reply.more;
  }

  /**
   * Fetches the value the feed left out of the live change at the head of the buffer, and those
   * of the buffered changes up to the last omitted one this watch shows: one request.
   */
  private async fetchOmitted(head: Change): Promise<void> {
    let upTo = head.revision;
    for (const c of this.live) if (c.revision > upTo && isOmitted(c) && this.merge.shows(c)) upTo = c.revision;
    await this.fetch(Math.max(1, Math.min(this.deps.limits.watchChangesPage, upTo - this.cursor)));
  }

  /** Follows the live buffer until a resync is due (gap, overflow, reconnect, idle timer). */
  private async follow(): Promise<void> {
    while (!this.stopped) {
      while (this.live.length > 0) {
        const change = this.live[0]!;
        const gap = change.revision > this.cursor + 1;
        // A gap: catch up, then continue here. If catching up made no progress at all, the log
        // no longer has those revisions (compacted away) and the change is taken as it stands.
        if (gap && this.gapCursor !== this.cursor) {
          this.gapCursor = this.cursor;
          return;
        }
        if (isOmitted(change) && change.revision > this.cursor && this.merge.shows(change)) {
          const before = this.cursor;
          await this.retrying(() => this.fetchOmitted(change));
          // Nothing past the cursor in the server's log: the change is not in it (see the header).
          if (this.cursor === before && this.live[0] === change) this.live.shift();
          continue;
        }
        this.live.shift();
        await this.process(change, gap);
        if (this.stopped) return;
      }
      if (this.liveOverflow || this.resync) {
        this.liveOverflow = false;
        return;
      }
      if (this.liveAt > 0) this.sink?.caughtUp(this.cursor, this.liveAt);
      const resyncMs = this.deps.limits.watchResyncMs;
      if (await this.sleep(resyncMs / 2 + Math.random() * resyncMs)) return; // idle: resync
    }
  }

  /** Emits a change unless it is a repeat or filtered out; `jump` accepts a revision past cursor + 1. */
  private async process(change: Change, jump: boolean): Promise<void> {
    if (change.revision <= this.cursor) return;
    if (!jump && change.revision !== this.cursor + 1) return;
    this.cursor = change.revision;
    const skip = !this.merge.matches(change) || this.merge.alreadyReplayed(change);
    // Past the newest write the replay showed, nothing can be a repeat of it any more.
    this.merge.passed(this.cursor);
    if (!skip) await this.emit(change);
    this.sink?.position(this.cursor);
  }

  private async emit(change: Change): Promise<void> {
    if (this.stopped) return;
    if (this.sink) return this.sink.change(change);
    const consumer = this.consumer;
    if (consumer) {
      this.consumer = undefined;
      consumer.resolve({ value: change, done: false });
      return;
    }
    this.out.push(change);
    while (this.out.length >= this.deps.limits.watchOutBufferMax && !this.stopped) await this.sleep(60_000);
  }

  /** A change-feed message: an array of changes of this location in revision order. */
  private onLive(msg: Msg): void {
    if (this.stopped) return;
    const epoch = Number(msg.headers?.get(EPOCH_HEADER) || 0);
    if (epoch > this.epoch) {
      // A new owner: what it publishes is checked against its history first (catchUp).
      this.live.length = 0;
      this.resync = true;
      this.wakeProducer();
      return;
    }
    // An owner the location has moved away from (its message late, e.g. through another route):
    // what it published may not be in the new owner's history. Whatever of it survived, the
    // next catch-up reads from the new owner.
    if (epoch < this.epoch) return;
    let changes: unknown;
    try {
      changes = decodeUntrusted(msg.data, "a change message");
    } catch {
      return; // not ours to judge; a gap check will refetch from the server if it mattered
    }
    if (!Array.isArray(changes)) return;
    this.liveAt = Date.now();
    for (const change of changes) {
      if (!isChange(change)) continue;
      if (this.live.length >= this.deps.limits.watchLiveBufferMax) {
        this.live.length = 0;
        this.liveOverflow = true;
      } else {
        this.live.push(change);
      }
    }
    this.wakeProducer();
  }

  /**
   * The location is now known to be held under `epoch`. The live buffer holds only changes of
   * older epochs (onLive drops those of newer ones until a reply names them): they may not be in
   * the new owner's history, and one that is not, taken as cursor + 1, would advance the cursor
   * over the new owner's change of that revision, which would then be dropped as a repeat and
   * never shown. They are dropped; the catch-up that follows reads the new owner's instead.
   */
  private raiseEpoch(epoch: number): void {
    this.epoch = epoch;
    this.live.length = 0;
    this.resync = true;
  }

  /** Waits `ms` or until woken; resolves true on timeout. */
  private sleep(ms: number): Promise<boolean> {
    return this.stopped ? Promise.resolve(false) : this.producerWait.sleep(ms);
  }

  private wakeProducer(): void {
    this.producerWait.wake();
  }
}

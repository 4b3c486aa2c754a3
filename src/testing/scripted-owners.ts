/**
 * A test double for the servers a watcher (net/client/watch.ts) reads from across a failover:
 * the successive owners of one location, each with its epoch, its log (revision → change) and
 * the revision its epoch began at. It stands in for the watcher's `Caller` (replay: `items`,
 * catch-up: `request { op: "changes" }`), answering as server-handlers.ts does, and publishes the
 * owners' change messages on a real NATS connection through the real ChangeFeed (with the epoch
 * header), so the watcher's live path is the production one.
 *
 * Why a double (fault injection a real cluster cannot produce on demand): an owner that dies with
 * a catch-up request unanswered, after publishing changes it never shipped, while the request is
 * then answered by the new owner; and messages of an old owner arriving late; an owner two moves
 * later, whose lineage names an owner in between that the watcher never heard from. `hold()`
 * makes the next `changes` request wait until the test releases it, so the interleaving is exact.
 */
import type { NatsConnection } from "nats";
import { StrataError } from "../errors.js";
import { sinceFor, type LineageEntry } from "../index/lineage.js";
import { silentLogger } from "../logger.js";
import { ChangeFeed } from "../net/server/server-changes.js";
import type { Change } from "../types.js";

export interface ScriptedOwner {
  epoch: number;
  /** The location's revision when this owner's epoch began (`since` in its replies). */
  since: number;
  /** Its history: the change of each revision. */
  log: Map<number, Change>;
  /** The revision its replays' scans began at (default its last): later ones were written during the scan. */
  replayBase?: number;
  /**
   * Its epoch lineage (index/lineage.ts): a request naming `shownEpoch` is answered with the since
   * a server computes from it (ownership.ts `sinceFor`). Absent: `since` as above.
   */
  lineage?: LineageEntry[];
  /** Answers as a server of an earlier release: a request naming `shownEpoch` is refused (INVALID_ARGUMENT). */
  legacy?: boolean;
}

interface Held {
  /** Resolves with the request's `after` when it comes. */
  arrived: Promise<number>;
  /** Lets it be answered (by the owner `current` then); resolves once the answer is made. */
  release: () => Promise<void>;
}

export class ScriptedOwners {
  /** The owner requests are answered by (a request never reaches a dead one). */
  current: ScriptedOwner;
  readonly requests: Array<{ op: string; after?: number; shownEpoch?: number }> = [];
  private readonly feed: ChangeFeed;
  private held: { arrived: (after: number) => void; released: Promise<void>; answered: () => void } | undefined;

  constructor(
    nc: NatsConnection,
    readonly location: string,
    first: ScriptedOwner,
    prefix = "strata",
  ) {
    this.current = first;
    this.feed = new ChangeFeed(nc, prefix, () => nc.info?.max_payload ?? 1024 * 1024, silentLogger);
  }

  /** A stream set of this location, as a server would record and publish it. */
  set(revision: number, seq: number, value: string): Change {
    const timestamp = Date.now();
    const bytes = new TextEncoder().encode(value);
    return { location: this.location, kind: "stream", revision, timestamp, op: "set", seq, message: { seq, value: bytes, timestamp }, size: bytes.byteLength, chunked: false };
  }

  /** `owner` commits `change` and publishes it under its epoch (a dead owner's last words too). */
  commit(owner: ScriptedOwner, change: Change): void {
    owner.log.set(change.revision, change);
    this.feed.add(change, owner.epoch);
    this.feed.flush();
  }

  /** Publishes `change` under `owner`'s epoch without committing it (a late or lost message). */
  publish(owner: ScriptedOwner, change: Change): void {
    this.feed.add(change, owner.epoch);
    this.feed.flush();
  }

  /**
   * The next `changes` request waits: `arrived` resolves with its `after` when it comes, and it is
   * answered (by whichever owner is `current` then) once `release()` is called.
   */
  hold(): Held {
    let release!: () => void;
    let answered!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const done = new Promise<void>((resolve) => (answered = resolve));
    const arrived = new Promise<number>((resolve) => (this.held = { arrived: resolve, released, answered }));
    return {
      arrived,
      release: () => {
        release();
        return done;
      },
    };
  }

  // --- the part of Caller a watcher uses ---

  async request(_call: unknown, body: { op: string; after: number; limit: number; shownEpoch?: number }): Promise<unknown> {
    this.requests.push({ op: body.op, after: body.after, ...(body.shownEpoch !== undefined ? { shownEpoch: body.shownEpoch } : {}) });
    const held = this.held;
    if (held !== undefined) {
      this.held = undefined;
      held.arrived(body.after);
      await held.released;
    }
    const owner = this.current;
    if (owner.legacy && body.shownEpoch !== undefined) {
      held?.answered();
      throw new StrataError("INVALID_ARGUMENT", `unknown field "shownEpoch" for op "changes"; allowed: after, limit`);
    }
    const since = body.shownEpoch !== undefined && owner.lineage !== undefined ? sinceFor(owner.lineage, body.shownEpoch, owner.since) : owner.since;
    const changes = [...owner.log.values()].filter((c) => c.revision > body.after).sort((a, b) => a.revision - b.revision);
    const page = changes.slice(0, body.limit);
    held?.answered();
    return { changes: page, next: page.length > 0 ? page[page.length - 1]!.revision : body.after, more: page.length < changes.length, epoch: owner.epoch, since };
  }

  async *items(_call: unknown, body: { op: string; startSeq?: number }, onFrame?: (frame: Record<string, unknown>) => void): AsyncGenerator<unknown> {
    this.requests.push({ op: body.op });
    const owner = this.current;
    const base = owner.replayBase ?? Math.max(0, ...owner.log.keys());
    // The location's current state: the newest set of each seq (this double writes no deletes).
    const bySeq = new Map<number, Change & { kind: "stream"; op: "set" }>();
    for (const c of [...owner.log.values()].sort((a, b) => a.revision - b.revision)) if (c.kind === "stream" && c.op === "set") bySeq.set(c.seq, c);
    const items = [...bySeq.values()].filter((c) => c.seq >= (body.startSeq ?? 1)).sort((a, b) => a.seq - b.seq).map((c) => ({ ...c.message, rev: c.revision }));
    onFrame?.({ items, base });
    for (const item of items) yield item;
    onFrame?.({ base, count: items.length, epoch: owner.epoch });
  }
}

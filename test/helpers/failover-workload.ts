/**
 * Workload drivers and the verifier for failover tests (test/failover/), over real StrataClients.
 *
 *   const wl = new FailoverWorkload({ clients: [a, b], locations: 200 });
 *   wl.start();
 *   await wl.waitForAcks({ count: 1 }, 20_000);     // every location written (an event, bounded)
 *   const killAt = Date.now(); await victim.kill9();
 *   await wl.waitForAcks({ locations: moved, since: killAt }, 15_000);
 *   await wl.stop();
 *   const stored = await readBack(client, wl.plan);
 *   await wl.waitForWatchers(stored, 15_000); wl.stopWatchers();
 *   const report = analyse({ ...wl.records(), stored, kills: [{ at: killAt, locations: moved }] });
 *
 * Writers: one loop per location, one write in flight per location (so seq order is write order),
 * a pause of `writeIntervalMs` between writes. Location i is a kv when i % kvEvery == kvEvery-1,
 * else a stream; even i acknowledge at "object", odd i at "local". Stream appends always carry a
 * msgId (`<location>#<n>`, also the value), and a failed write is sent again with the same msgId
 * (kv: the same key and value), as an application would. Every acknowledgement (location, seq or
 * key, msgId, ack level, times) and every failure (its code) is recorded.
 * Watchers: `watch({ startSeq: 1 })` on every `watchEvery`-th stream location, recording every change.
 * The verifier (`analyse`, `formatAnalysis`) is in failover-verify.ts.
 */
import type { StrataClient } from "../../src/net/client/client.js";
import type { AckMode, Change } from "../../src/types.js";
import type { Cluster, LocateAnswer } from "../../src/testing/cluster.js";
import { waitFor } from "../../src/testing/cluster.js";
import { summariseFailures } from "./failover-verify.js";

const enc = new TextEncoder();
const dec = new TextDecoder();

export interface WorkloadOptions {
  /** Writers of location i use clients[i % n]. */
  clients: StrataClient[];
  /** Watchers of location i use watchClients[(i + 1) % n] (another connection, maybe another NATS node); default `clients`. */
  watchClients?: StrataClient[];
  /** Default 200. */
  locations?: number;
  /** Location prefix; default "fo". */
  name?: string;
  /** Every kvEvery-th location is a kv; default 5. */
  kvEvery?: number;
  /** Every watchEvery-th stream location is watched; default 4. */
  watchEvery?: number;
  /** Pause between two writes of one location; default 400 ms. */
  writeIntervalMs?: number;
  /** Times a failed write is sent again (same msgId) before the next one; default 3. */
  retriesPerWrite?: number;
}

export interface PlannedLocation {
  location: string;
  index: number;
  kind: "stream" | "kv";
  ack: AckMode;
  watched: boolean;
}

export interface AckRecord {
  location: string;
  kind: "stream" | "kv";
  /** Stream seq, or for a kv the key's revision. */
  seq: number;
  key?: string;
  msgId: string;
  ack: AckMode;
  sentAt: number;
  ackedAt: number;
  duplicate: boolean;
}

export interface FailureRecord {
  location: string;
  msgId: string;
  code: string;
  message: string;
  at: number;
}

export interface WatchRecord {
  revision: number;
  op: string;
  seq?: number;
  msgId?: string;
  at: number;
}

/** What a location holds at the end: stream seq → msgId, or kv key → msgId. */
export type StoredState = { kind: "stream"; bySeq: Map<number, string> } | { kind: "kv"; byKey: Map<string, string> };

export class FailoverWorkload {
  readonly plan: PlannedLocation[];
  private readonly acks: AckRecord[] = [];
  private readonly failures: FailureRecord[] = [];
  private readonly attempted = new Map<string, Set<string>>();
  private readonly watched = new Map<string, WatchRecord[]>();
  private readonly watchErrors: Array<{ location: string; message: string }> = [];
  private readonly watches: Array<{ stop(): void }> = [];
  private readonly loops: Promise<void>[] = [];
  private readonly watchLoops: Promise<void>[] = [];
  private running = false;
  private wake = new Set<() => void>();
  private readonly options: Required<Omit<WorkloadOptions, "watchClients">> & { watchClients: StrataClient[] };

  constructor(options: WorkloadOptions) {
    this.options = {
      locations: 200,
      name: "fo",
      kvEvery: 5,
      watchEvery: 4,
      writeIntervalMs: 400,
      retriesPerWrite: 3,
      ...options,
      watchClients: options.watchClients ?? options.clients,
    };
    const o = this.options;
    this.plan = [];
    let streams = 0;
    for (let i = 0; i < o.locations; i++) {
      const kind = i % o.kvEvery === o.kvEvery - 1 ? "kv" : "stream";
      const watched = kind === "stream" && streams++ % o.watchEvery === 0;
      this.plan.push({ location: `${o.name}/l${i}`, index: i, kind, ack: i % 2 === 0 ? "object" : "local", watched });
    }
  }

  get locations(): string[] {
    return this.plan.map((p) => p.location);
  }

  /** Starts watchers, then writers. */
  start(): void {
    this.running = true;
    for (const p of this.plan) if (p.watched) this.watchLoops.push(this.watchLoop(p));
    for (const p of this.plan) this.loops.push(this.writeLoop(p));
  }

  /** Stops the writers and waits for every write in flight to end (acknowledged or failed). */
  async stop(): Promise<void> {
    this.running = false;
    for (const w of this.wake) w();
    await Promise.all(this.loops);
  }

  stopWatchers(): void {
    for (const w of this.watches) w.stop();
  }

  records(): { plan: PlannedLocation[]; acks: AckRecord[]; failures: FailureRecord[]; attempted: Map<string, Set<string>>; watched: Map<string, WatchRecord[]> } {
    return { plan: this.plan, acks: [...this.acks], failures: [...this.failures], attempted: this.attempted, watched: this.watched };
  }

  /** Values a test wrote itself to workload locations, so the verifier does not call them foreign. */
  noteExternal(entries: Array<[location: string, value: string]>): void {
    for (const [location, value] of entries) {
      const set = this.attempted.get(location) ?? new Set<string>();
      set.add(value);
      this.attempted.set(location, set);
    }
  }

  failureList(): FailureRecord[] {
    return [...this.failures];
  }

  acksOf(location: string): AckRecord[] {
    return this.acks.filter((a) => a.location === location);
  }

  /**
   * Resolves when each of `locations` (default all) has at least `count` (default 1) writes
   * acknowledged at or after `since` (default 0); throws after `timeoutMs` naming the laggards.
   */
  async waitForAcks(opts: { locations?: string[]; since?: number; count?: number }, timeoutMs: number): Promise<void> {
    const want = new Set(opts.locations ?? this.locations);
    const since = opts.since ?? 0;
    const count = opts.count ?? 1;
    try {
      await waitFor(
        `${want.size} locations to each get ${count} acknowledged write(s) since ${since}`,
        () => {
          const n = new Map<string, number>();
          for (const a of this.acks) if (a.ackedAt >= since && want.has(a.location)) n.set(a.location, (n.get(a.location) ?? 0) + 1);
          return [...want].every((l) => (n.get(l) ?? 0) >= count);
        },
        timeoutMs,
        50,
      );
    } catch (err) {
      const lag = [...want].filter((l) => this.acks.filter((a) => a.location === l && a.ackedAt >= since).length < count);
      const codes = summariseFailures(this.failures.filter((f) => f.at >= since));
      throw new Error(`${(err as Error).message}; ${lag.length} behind, e.g. ${lag.slice(0, 5).join(", ")}; failures since: ${JSON.stringify(codes)}`);
    }
  }

  /** Resolves when every watcher has seen, for every seq `stored` holds, that seq (bounded). */
  async waitForWatchers(stored: Map<string, StoredState>, timeoutMs: number): Promise<void> {
    await waitFor(
      "every watcher to catch up with the stored state",
      () =>
        this.plan
          .filter((p) => p.watched)
          .every((p) => {
            const s = stored.get(p.location);
            if (!s || s.kind !== "stream" || s.bySeq.size === 0) return true;
            const last = Math.max(...s.bySeq.keys());
            return (this.watched.get(p.location) ?? []).some((w) => w.seq !== undefined && w.seq >= last);
          }),
      timeoutMs,
      100,
    ).catch((err: Error) => {
      // Not fatal here: the analysis reports what each watcher missed, which is the finding.
      this.watchErrors.push({ location: "*", message: err.message });
    });
  }

  watchFailures(): Array<{ location: string; message: string }> {
    return [...this.watchErrors];
  }

  private async writeLoop(p: PlannedLocation): Promise<void> {
    const client = this.options.clients[p.index % this.options.clients.length]!;
    const attempted = this.attempted.get(p.location) ?? new Set<string>();
    this.attempted.set(p.location, attempted);
    for (let n = 0; this.running; n++) {
      const msgId = `${p.location}#${n}`;
      attempted.add(msgId);
      for (let attempt = 0; attempt <= this.options.retriesPerWrite; attempt++) {
        const sentAt = Date.now();
        try {
          if (p.kind === "stream") {
            const r = await client.stream(p.location).append({ value: enc.encode(msgId) }, { msgId, ack: p.ack });
            this.acks.push({ location: p.location, kind: "stream", seq: r.seq, msgId, ack: p.ack, sentAt, ackedAt: Date.now(), duplicate: r.duplicate === true });
          } else {
            const key = `k${n}`;
            const r = await client.kv(p.location).set(key, enc.encode(msgId), { ack: p.ack });
            this.acks.push({ location: p.location, kind: "kv", seq: r.revision, key, msgId, ack: p.ack, sentAt, ackedAt: Date.now(), duplicate: false });
          }
          break;
        } catch (err) {
          const e = err as { code?: string; message?: string };
          this.failures.push({ location: p.location, msgId, code: e.code ?? "NOT_A_STRATA_ERROR", message: String(e.message).slice(0, 300), at: Date.now() });
          if (!this.running) break;
        }
      }
      await this.pause(this.options.writeIntervalMs);
    }
  }

  private async watchLoop(p: PlannedLocation): Promise<void> {
    const client = this.options.watchClients[(p.index + 1) % this.options.watchClients.length]!;
    const seen: WatchRecord[] = [];
    this.watched.set(p.location, seen);
    const watch = client.stream(p.location).watch({ startSeq: 1 });
    this.watches.push(watch);
    try {
      for await (const change of watch as AsyncIterable<Change>) {
        const rec: WatchRecord = { revision: change.revision, op: change.op, at: Date.now() };
        if (change.kind === "stream" && change.op === "set") {
          rec.seq = change.seq;
          rec.msgId = change.message.value ? dec.decode(change.message.value) : undefined;
        } else if (change.kind === "stream" && change.op === "delete") {
          rec.seq = change.seq;
        }
        seen.push(rec);
      }
    } catch (err) {
      this.watchErrors.push({ location: p.location, message: (err as Error).message });
    }
  }

  /** The pacing between writes (not a synchronisation): cut short by stop(). */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wake.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wake.add(done);
    });
  }
}

/** Reads every planned location back (stream getAll / kv getAll); a location that cannot be read is missing from the map. */
export async function readBack(client: StrataClient, plan: PlannedLocation[], concurrency = 20): Promise<{ stored: Map<string, StoredState>; unreadable: Array<{ location: string; code: string }> }> {
  const stored = new Map<string, StoredState>();
  const unreadable: Array<{ location: string; code: string }> = [];
  await forEachLimit(plan, concurrency, async (p) => {
    try {
      if (p.kind === "stream") {
        const bySeq = new Map<number, string>();
        for await (const m of client.stream(p.location).getAll()) bySeq.set(m.seq, m.value ? dec.decode(m.value) : "");
        stored.set(p.location, { kind: "stream", bySeq });
      } else {
        const byKey = new Map<string, string>();
        for await (const e of client.kv(p.location).getAll()) byKey.set(e.key, e.value ? dec.decode(e.value) : "");
        stored.set(p.location, { kind: "kv", byKey });
      }
    } catch (err) {
      unreadable.push({ location: p.location, code: (err as { code?: string }).code ?? String(err) });
    }
  });
  return { stored, unreadable };
}

/** The coordinator's answer for every location (raw locate, `concurrency` at a time). */
export async function locateAll(cluster: Cluster, locations: string[], concurrency = 25): Promise<Map<string, LocateAnswer>> {
  const out = new Map<string, LocateAnswer>();
  await forEachLimit(locations, concurrency, async (l) => {
    out.set(l, await cluster.locate(l));
  });
  return out;
}

/** Locations whose answer names `server`. */
export function heldBy(answers: Map<string, LocateAnswer>, server: string): string[] {
  return [...answers].filter(([, a]) => "server" in a && a.server === server && !("code" in a)).map(([l]) => l);
}

/** The server holding the most locations in `answers`. */
export function busiest(answers: Map<string, LocateAnswer>): string {
  const n = new Map<string, number>();
  for (const a of answers.values()) if (!("code" in a)) n.set(a.server, (n.get(a.server) ?? 0) + 1);
  return [...n].sort((x, y) => y[1] - x[1])[0]![0];
}

/**
 * Which servers answer a read (inventory) of a location when asked directly: pinned clients, one
 * per server id, each with a short budget. A correct cluster has exactly one.
 */
export async function servingServers(pinned: Map<string, StrataClient>, p: Pick<PlannedLocation, "location" | "kind">): Promise<string[]> {
  const answers = await Promise.all(
    [...pinned].map(async ([id, client]) => {
      try {
        await (p.kind === "stream" ? client.stream(p.location) : client.kv(p.location)).inventory();
        return id;
      } catch {
        return undefined;
      }
    }),
  );
  return answers.filter((x): x is string => x !== undefined);
}

export async function forEachLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

/**
 * A watcher across a change of owner (docs/failover.md): a change the old owner published and
 * never shipped must not take the place of the new owner's change of the same revision. Found by
 * the kill-server failover test (a watcher missed surviving changes): a watcher whose catch-up was
 * in flight when its owner died still had the owner's last live changes in its buffer when the
 * new owner answered; it showed one of those (lost) as cursor + 1, and then dropped the new
 * owner's change of that revision as a repeat, for good.
 *
 * Also: a late message of the old owner, and a write the replay showed (made during its scan) that
 * the move lost, whose seq the new owner writes again at the same revision.
 *
 * The owners are scripted (src/testing/scripted-owners.ts: the exact interleaving is the fault);
 * the watcher, its NATS subscription, the change feed and nats-server are the real ones.
 */
import { connect, type NatsConnection } from "nats";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { Caller } from "../../src/net/client/client-call.js";
import { Transport } from "../../src/net/client/client-transport.js";
import { Watcher } from "../../src/net/client/watch.js";
import { resolveClientLimits } from "../../src/net/wire/net-limits.js";
import { startNatsServer, type RunningNatsServer } from "../../src/testing/nats-server.js";
import { ScriptedOwners, type ScriptedOwner } from "../../src/testing/scripted-owners.js";
import type { Change } from "../../src/types.js";

let nats: RunningNatsServer;
const conns: NatsConnection[] = [];

beforeAll(async () => {
  nats = await startNatsServer();
});
afterAll(async () => {
  for (const nc of conns) await nc.close();
  await nats?.stop();
});

async function connection(): Promise<NatsConnection> {
  const nc = await connect({ servers: nats.url });
  conns.push(nc);
  return nc;
}

const shown = (c: Change) => (c.kind === "stream" && c.op === "set" ? `${c.revision}:${c.seq}=${new TextDecoder().decode(c.message.value)}` : `${c.revision}:${c.op}`);

/** The next `n` changes the watch shows, or those it showed within `ms` (a watcher that skips one stalls). */
async function nextShown(watch: Watcher, n: number, ms = 5000): Promise<string[]> {
  const out: string[] = [];
  const deadline = Date.now() + ms;
  while (out.length < n) {
    let timer: NodeJS.Timeout | undefined;
    const bound = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), Math.max(0, deadline - Date.now()))));
    const next = await Promise.race([watch.next(), bound]);
    clearTimeout(timer);
    if (next === undefined || next.done) break;
    out.push(shown(next.value));
  }
  return out;
}

/** A watcher of `location` reading from `owners`, with its own connection (as a client's). */
async function watcherOf(owners: ScriptedOwners, nc: NatsConnection): Promise<Watcher> {
  const deps = { caller: owners as unknown as Caller, transport: new Transport(nc), prefix: "strata", limits: resolveClientLimits({ watchResyncMs: 50 }), watches: new Set<Watcher>() };
  return new Watcher(deps, owners.location, { kind: "stream", startSeq: 1 }).start();
}

/** Waits until every message published on `nc` so far has been delivered to `watcherNc`'s subscribers. */
async function delivered(nc: NatsConnection, watcherNc: NatsConnection): Promise<void> {
  const marker = `marker.${Math.random().toString(36).slice(2)}`;
  const sub = watcherNc.subscribe(marker, { max: 1 });
  await watcherNc.flush();
  nc.publish(marker);
  for await (const _ of sub) break;
}

/** Two owners: the first (epoch 1) holds revisions 1..2; the second (epoch 2) imported them. */
function setup(location: string, serverNc: NatsConnection): { owners: ScriptedOwners; old: ScriptedOwner; next: ScriptedOwner } {
  const old: ScriptedOwner = { epoch: 1, since: 0, log: new Map() };
  const owners = new ScriptedOwners(serverNc, location, old);
  owners.commit(old, owners.set(1, 1, "a"));
  owners.commit(old, owners.set(2, 2, "b"));
  const next: ScriptedOwner = { epoch: 2, since: 2, log: new Map(old.log) };
  return { owners, old, next };
}

it("drops the old owner's live changes it buffered during a catch-up the new owner answered", async () => {
  const serverNc = await connection();
  const watcherNc = await connection();
  const { owners, old, next } = setup("we/buffered", serverNc);
  const watch = await watcherOf(owners, watcherNc);
  expect(await nextShown(watch, 2)).toEqual(["1:1=a", "2:2=b"]);

  // An idle resync asks the old owner, which dies before answering...
  const held = owners.hold();
  expect(await held.arrived).toBe(2);
  // ...having published a write (revision 3) it never shipped: the watcher buffers it.
  owners.publish(old, owners.set(3, 3, "lost"));
  await delivered(serverNc, watcherNc);
  // The request is answered by the new owner (epoch 2, since 2: nothing to rewind), which then
  // writes its own revision 3.
  owners.current = next;
  await held.release();
  owners.commit(next, owners.set(3, 3, "kept"));
  owners.commit(next, owners.set(4, 4, "after"));

  expect(await nextShown(watch, 2)).toEqual(["3:3=kept", "4:4=after"]);
  watch.stop();
});

it("ignores a live message of an older epoch that arrives after the new owner was heard from", async () => {
  const serverNc = await connection();
  const watcherNc = await connection();
  const { owners, old, next } = setup("we/late", serverNc);
  owners.current = next;
  const watch = await watcherOf(owners, watcherNc);
  expect(await nextShown(watch, 2)).toEqual(["1:1=a", "2:2=b"]);
  // The watcher knows epoch 2 (its replay and catch-up were answered by the new owner); a
  // message of the old owner comes late (through another route), then the new owner's.
  await waitForRequests(owners, 2);
  owners.publish(old, owners.set(3, 3, "ghost"));
  await delivered(serverNc, watcherNc);
  owners.commit(next, owners.set(3, 3, "real"));
  owners.commit(next, owners.set(4, 4, "after"));

  expect(await nextShown(watch, 2)).toEqual(["3:3=real", "4:4=after"]);
  watch.stop();
});

it("shows the new owner's write of a seq whose old write the replay showed and the move lost", async () => {
  const serverNc = await connection();
  const watcherNc = await connection();
  const { owners, old, next } = setup("we/replayed", serverNc);
  // The replay's scan began at revision 2 and saw revision 3, which the old owner never shipped.
  owners.commit(old, owners.set(3, 3, "lost"));
  old.replayBase = 2;
  const held = owners.hold();
  const watch = await watcherOf(owners, watcherNc);
  expect(await nextShown(watch, 3)).toEqual(["1:1=a", "2:2=b", "3:3=lost"]);
  // Its catch-up (after 2) is answered by the new owner (since 2: nothing to rewind), which then
  // writes seq 3 again, at revision 3: not a repeat of what the replay showed.
  expect(await held.arrived).toBe(2);
  owners.current = next;
  await held.release();
  owners.commit(next, owners.set(3, 3, "kept"));
  owners.commit(next, owners.set(4, 4, "after"));

  expect(await nextShown(watch, 2)).toEqual(["3:3=kept", "4:4=after"]);
  watch.stop();
});

/** Waits (bounded) until the watcher has sent `n` requests: its replay, then its first catch-up. */
async function waitForRequests(owners: ScriptedOwners, n: number): Promise<void> {
  const deadline = Date.now() + 5000;
  while (owners.requests.length < n) {
    if (Date.now() > deadline) throw new Error(`the watcher sent ${owners.requests.length} requests, not ${n}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/**
 * Three owners: the watcher is shown epoch 1's revisions 1..4 (3 and 4 never shipped); epoch 2
 * imported 1..2 and wrote its own 3..6; the watcher never hears from it (its request is held);
 * epoch 3 imported 1..6 from epoch 2 (since 6, not below the watcher's cursor 4) and writes 7.
 */
function threeOwners(location: string, serverNc: NatsConnection, third: Partial<ScriptedOwner> = {}): { owners: ScriptedOwners; first: ScriptedOwner; second: ScriptedOwner; thirdOwner: ScriptedOwner } {
  const first: ScriptedOwner = { epoch: 1, since: 0, log: new Map() };
  const owners = new ScriptedOwners(serverNc, location, first);
  for (let r = 1; r <= 4; r++) owners.commit(first, owners.set(r, r, `a${r}`));
  const second: ScriptedOwner = { epoch: 2, since: 2, log: new Map([...first.log].filter(([rev]) => rev <= 2)), lineage: [[2, 2]] };
  const thirdOwner: ScriptedOwner = { epoch: 3, since: 6, log: new Map(), lineage: [[2, 2], [3, 6]], ...third };
  return { owners, first, second, thirdOwner };
}

/** Epoch 2 writes 3..6 (published: the watcher drops them, a newer epoch it has not heard from), dies; epoch 3 takes over and writes 7. */
async function moveTwice(o: ReturnType<typeof threeOwners>, serverNc: NatsConnection, watcherNc: NatsConnection): Promise<void> {
  const { owners, second, thirdOwner } = o;
  owners.current = second;
  for (let r = 3; r <= 6; r++) owners.commit(second, owners.set(r, r, `b${r}`));
  await delivered(serverNc, watcherNc);
  thirdOwner.log = new Map(second.log);
  owners.current = thirdOwner;
  owners.commit(thirdOwner, owners.set(7, 7, "c7"));
}

it("shows the changes of an owner in between it never heard from, after two moves (epoch lineage)", async () => {
  const serverNc = await connection();
  const watcherNc = await connection();
  const o = threeOwners("we/lineage", serverNc);
  const watch = await watcherOf(o.owners, watcherNc);
  expect(await nextShown(watch, 4)).toEqual(["1:1=a1", "2:2=a2", "3:3=a3", "4:4=a4"]);
  // The watcher's next catch-up (it was shown epoch 1's changes up to 4) waits while the
  // location moves twice; it is answered by epoch 3.
  const held = o.owners.hold();
  expect(await held.arrived).toBe(4);
  await moveTwice(o, serverNc, watcherNc);
  await held.release();
  // Epoch 3's lineage names epoch 2's start (2): the watcher rewinds there and is shown epoch 2's
  // writes, which replaced the lost 3..4 of epoch 1, then epoch 3's.
  expect(await nextShown(watch, 5)).toEqual(["3:3=b3", "4:4=b4", "5:5=b5", "6:6=b6", "7:7=c7"]);
  expect(o.owners.requests.filter((r) => r.op === "changes").every((r) => r.shownEpoch === undefined || r.shownEpoch >= 1)).toBe(true);
  expect(o.owners.requests.some((r) => r.op === "changes" && r.shownEpoch === 1)).toBe(true);
  watch.stop();
});

it("asks a server of an earlier release again without shownEpoch, and follows it as before", async () => {
  const serverNc = await connection();
  const watcherNc = await connection();
  const o = threeOwners("we/legacy", serverNc, { legacy: true });
  const watch = await watcherOf(o.owners, watcherNc);
  expect(await nextShown(watch, 4)).toEqual(["1:1=a1", "2:2=a2", "3:3=a3", "4:4=a4"]);
  const held = o.owners.hold();
  expect(await held.arrived).toBe(4);
  await moveTwice(o, serverNc, watcherNc);
  await held.release();
  // The earlier release's `since` (6) is where its epoch began: nothing to rewind, so epoch 2's 3
  // and 4 are not shown (the known limit before lineages); the watch goes on rather than failing
  // on the refused field.
  expect(await nextShown(watch, 3)).toEqual(["5:5=b5", "6:6=b6", "7:7=c7"]);
  const asked = o.owners.requests.filter((r) => r.op === "changes" && r.after === 4);
  expect(asked.map((r) => r.shownEpoch)).toEqual(expect.arrayContaining([1, undefined]));
  watch.stop();
});

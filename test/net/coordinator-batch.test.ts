/**
 * The coordinator state's batches (coordinator-state.ts `change`, coordinator-batch.ts): the
 * changes asked for together are decided in one transaction, each seeing the ones before it; a
 * decision that throws fails alone; server counts stay equal to the assignments after a reopen;
 * grants to push reach `onGrants` after the flush and before the change resolves.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, expect, it } from "vitest";
import { CoordinatorState } from "../../src/net/coord/coordinator-state.js";
import { created } from "../../src/net/coord/location-rules.js";

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function open(onGrants?: (server: string, incarnation: number, grants: Array<[string, number]>) => void): Promise<{ state: CoordinatorState; dir: string }> {
  const dir = await mkdtemp(join(tmpdir(), "strata-coord-batch-"));
  dirs.push(dir);
  return { state: CoordinatorState.open(dir, { serversMax: 10, pendingChangesMax: 10_000, now: Date.now, ...(onGrants ? { onGrants } : {}) }), dir };
}

it("decides concurrent changes one after another in shared transactions, and a throwing one fails alone", async () => {
  const { state, dir } = await open();
  await state.register({ id: "a", startedAt: 1, load: {} }, () => undefined);
  await state.change(["x"], (tx) => tx.put("x", created("a")));
  // 200 changes asked at once, each bumping the epoch it reads: none may decide from an old value.
  const bumps = Array.from({ length: 200 }, (_, i) =>
    state.change(["x"], (tx) => {
      if (i === 100) throw new Error("a bug in one decision");
      const a = tx.get("x")!;
      tx.put("x", { ...a, epoch: a.epoch + 1 });
      tx.put(`y${i}`, created("a"));
      return a.epoch + 1;
    }),
  );
  const settled = await Promise.allSettled(bumps);
  expect(settled[100]).toMatchObject({ status: "rejected", reason: { message: "a bug in one decision" } });
  const epochs = settled.filter((r) => r.status === "fulfilled").map((r) => (r as PromiseFulfilledResult<number>).value);
  expect(epochs).toEqual(Array.from({ length: 199 }, (_, i) => i + 1));
  expect((await state.read("x"))!.epoch).toBe(199);
  expect(state.server("a")!.assigned).toBe(200);
  await state.close();
  const again = CoordinatorState.open(dir, { serversMax: 10, pendingChangesMax: 10_000, now: Date.now });
  expect(again.server("a")!.assigned).toBe(200);
  expect(again.assignmentCount()).toBe(200);
  expect(again.locationsOf("a", 1000)).toHaveLength(200);
  await again.close();
});

it("hands the grants to push to onGrants once durable, before the change resolves, grouped per server", async () => {
  const events: string[] = [];
  const { state } = await open((server, incarnation, grants) => events.push(`push ${server}#${incarnation} ${grants.map(([l, e]) => `${l}@${e}`).join(",")}`));
  await state.register({ id: "a", startedAt: 1, load: {}, push: true }, () => undefined);
  expect(state.server("a")!.pushKey).toMatch(/^[-_a-zA-Z0-9]{24}$/);
  const changes = ["p", "q"].map((l) =>
    state.change(
      [l],
      (tx) => {
        tx.put(l, { server: "a", incarnation: 1, epoch: 1, confirmed: true });
        tx.pushGrant("a", 1, l, 1);
        return l;
      },
      (r) => events.push(`sync ${r}`),
    ).then((r) => events.push(`resolved ${r}`)),
  );
  await Promise.all(changes);
  expect(events).toEqual(["push a#1 p@1,q@1", "sync p", "sync q", "resolved p", "resolved q"]);
  expect(state.server("a")!.held).toBe(2);
  await state.close();
});

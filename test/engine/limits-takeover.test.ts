/**
 * Per-location limits across a takeover (docs/compaction.md "Per-location limits", docs/failover.md):
 * the imported location keeps the origin's configuration (from the origin's checkpoint or from a
 * config record in its segments after it), its `conf` row points into the origin's segments, the
 * importer enforces it, and a reindex of the importer (which redoes the import) keeps it.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FOREIGN_SEG_SPAN } from "../../src/index/foreign-logs.js";
import { Store } from "../../src/store.js";
import { all } from "../helpers/collect.js";
import { LIMITS, World, enc, shipAll } from "./takeover-helpers.js";

let w: World;
beforeEach(() => {
  w = new World();
});
afterEach(async () => {
  await w.dispose();
});

const ITEMS = (cut: number) => ["l/s", "l/k"].map((location) => ({ location, from: "a", cut, epoch: 1 }));

describe("takeover carries the configuration", () => {
  for (const checkpoint of [false, true]) {
    it(`from the origin's ${checkpoint ? "checkpoint" : "segments"}`, async () => {
      const a = await w.store("a");
      await a.stream("l/s").config({ maxMsgs: 2, denyDelete: true });
      await a.kv("l/k").config({ maxMsgs: 2, ttlMs: 60_000 });
      for (let i = 0; i < 5; i++) await a.stream("l/s").append({ value: enc(`m${i}`) });
      await a.kv("l/k").set("x", enc("x"));
      if (checkpoint) {
        await shipAll(a);
        await a.tier!.checkpoint();
      }
      // Changed after the checkpoint (loosened: denyDelete allows no stricter one): the newest wins.
      await a.stream("l/s").config({ maxMsgs: 3, denyDelete: true });
      const want = { s: a.inventory("l/s"), k: a.inventory("l/k") };
      expect(want.s.limits.maxMsgs).toBe(3);
      const cut = await shipAll(a);
      await w.close(a);

      let b = await w.store("b");
      await b.importLocations(ITEMS(cut));
      expect({ s: b.inventory("l/s"), k: b.inventory("l/k") }).toEqual(want);
      const conf = b.index.conf.get(b.index.meta("l/s")!.id)!;
      expect(conf.seg).toBeGreaterThanOrEqual(FOREIGN_SEG_SPAN); // points into a's segments
      // B enforces it.
      await b.stream("l/s").append({ value: enc("on b") });
      expect((await all(b.stream("l/s").getAll())).map((m) => m.seq)).toEqual([4, 5, 6]);
      await expect(b.stream("l/s").delete(5)).rejects.toMatchObject({ code: "FORBIDDEN" });
      await b.kv("l/k").set("y", enc("y"));
      await expect(b.kv("l/k").set("z", enc("z"))).rejects.toMatchObject({ code: "LIMIT" });
      expect((await b.kv("l/k").get("y"))?.expiresAt).toBe(w.now + 60_000);
      const after = { s: b.inventory("l/s"), k: b.inventory("l/k") };
      await w.close(b);
      await Store.reindex({ dir: w.dir("b"), id: "b", tier: w.tier, limits: LIMITS, clock: () => w.now });
      b = await w.store("b");
      expect({ s: b.inventory("l/s"), k: b.inventory("l/k") }).toEqual(after);
    });
  }
});

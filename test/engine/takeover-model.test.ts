/**
 * Property test of takeover: random stream and kv operations on server A (msgIds, explicit seqs,
 * deletes, deleteAll, large chunked values, TTLs, clock steps), with segment seals and index
 * checkpoints at random points, then an import on B with a random cut. The model of "A's log up
 * to the cut" is A's own segment files up to the cut replayed by a plain store (recovery, no
 * takeover code involved): B must read exactly like it, location for location.
 */
import fc from "fast-check";
import fs from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { segmentPath } from "../../src/log/segment-files.js";
import { Store } from "../../src/store.js";
import { LIMITS, World, bytes, dump, enc, shipAll } from "./takeover-helpers.js";

const STREAMS = ["p/s1", "p/s2"];
const KVS = ["p/k1", "p/k2"];

type Op =
  | { t: "append"; loc: string; msgId?: string; large: boolean }
  | { t: "set"; loc: string; seq: number }
  | { t: "del"; loc: string; seq: number }
  | { t: "delAll"; loc: string; endSeq?: number }
  | { t: "kset"; loc: string; key: string; ttlMs?: number; large: boolean }
  | { t: "kdel"; loc: string; key: string }
  | { t: "tick"; ms: number }
  | { t: "seal" }
  | { t: "checkpoint" };

const stream = fc.constantFrom(...STREAMS);
const kv = fc.constantFrom(...KVS);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.record({ t: fc.constant("append" as const), loc: stream, msgId: fc.option(fc.constantFrom("m0", "m1", "m2"), { nil: undefined }), large: fc.boolean() }, { requiredKeys: ["t", "loc", "large"] }), weight: 4 },
  { arbitrary: fc.record({ t: fc.constant("set" as const), loc: stream, seq: fc.integer({ min: 1, max: 12 }) }), weight: 2 },
  { arbitrary: fc.record({ t: fc.constant("del" as const), loc: stream, seq: fc.integer({ min: 1, max: 12 }) }), weight: 1 },
  { arbitrary: fc.record({ t: fc.constant("delAll" as const), loc: stream, endSeq: fc.option(fc.integer({ min: 0, max: 12 }), { nil: undefined }) }, { requiredKeys: ["t", "loc"] }), weight: 1 },
  { arbitrary: fc.record({ t: fc.constant("kset" as const), loc: kv, key: fc.constantFrom("a", "b", "c"), ttlMs: fc.option(fc.constantFrom(500, 5000), { nil: undefined }), large: fc.boolean() }, { requiredKeys: ["t", "loc", "key", "large"] }), weight: 4 },
  { arbitrary: fc.record({ t: fc.constant("kdel" as const), loc: kv, key: fc.constantFrom("a", "b", "c") }), weight: 1 },
  { arbitrary: fc.record({ t: fc.constant("tick" as const), ms: fc.integer({ min: 0, max: 2000 }) }), weight: 1 },
  { arbitrary: fc.constant({ t: "seal" as const }), weight: 2 },
  { arbitrary: fc.constant({ t: "checkpoint" as const }), weight: 1 },
);

async function run(a: Store, w: World, op: Op, n: number): Promise<void> {
  const value = (large: boolean) => (large ? bytes(5000 + n, n) : enc(`v${n}`));
  switch (op.t) {
    case "append":
      return void (await a.stream(op.loc).append({ value: value(op.large) }, op.msgId ? { msgId: op.msgId } : {}));
    case "set":
      return void (await a.stream(op.loc).set(op.seq, { value: enc(`s${n}`) }));
    case "del":
      return void (await a.stream(op.loc).delete(op.seq));
    case "delAll":
      return void (await a.stream(op.loc).deleteAll(op.endSeq === undefined ? {} : { endSeq: op.endSeq }));
    case "kset":
      return void (await a.kv(op.loc).set(op.key, value(op.large), op.ttlMs ? { ttlMs: op.ttlMs } : {}));
    case "kdel":
      return void (await a.kv(op.loc).delete(op.key));
    case "tick":
      w.now += op.ms;
      return;
    case "seal":
      return void (await shipAll(a));
    case "checkpoint":
      await shipAll(a);
      return void (await a.tier!.checkpoint());
  }
}

describe("takeover model", () => {
  it("B's import up to a random cut reads like A's log up to that cut", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { minLength: 1, maxLength: 30 }), fc.double({ min: 0, max: 1, noNaN: true }), async (ops, cutAt) => {
        const w = new World();
        try {
          const a = await w.store("a");
          for (const [n, op] of ops.entries()) await run(a, w, op, n);
          const last = await shipAll(a);
          await w.close(a);
          const cut = 1 + Math.floor(cutAt * (last - 1 + 0.999));
          // The model: A's own segment files up to the cut, replayed by a store with no tier.
          const modelDir = w.dir("model");
          fs.mkdirSync(path.join(modelDir, "segments"), { recursive: true });
          for (let seg = 1; seg <= cut; seg++) fs.copyFileSync(segmentPath(path.join(w.dir("a"), "segments"), seg), segmentPath(path.join(modelDir, "segments"), seg));
          const model = await Store.open({ dir: modelDir, id: "a", limits: LIMITS, sweepTimers: false, clock: () => w.now });
          const want = await dump(model, STREAMS, KVS);
          await model.close();
          const b = await w.store("b");
          await b.importLocations([...STREAMS, ...KVS].map((location) => ({ location, from: "a", cut, epoch: 1 })));
          expect(await dump(b, STREAMS, KVS)).toEqual(want);
        } finally {
          await w.dispose();
        }
      }),
      { numRuns: 15 },
    );
  });
});

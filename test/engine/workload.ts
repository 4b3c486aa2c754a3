/**
 * The model-based workload shared by the engine's property tests (model.test.ts and
 * fault-injection.test.ts): the write operations, their fast-check generators over a given set of
 * locations, and how one operation runs on the Store and on the plain model of ./model.ts.
 *
 * An operation is first made concrete against the model (`concretize`): conditions such as
 * "expectedLastSeq = the current last seq" become numbers, so the very same write can be applied
 * to the store now and to a model later, e.g. only once the store has said it succeeded.
 */
import fc from "fast-check";
import { StrataError } from "../../src/errors.js";
import type { Store } from "../../src/store.js";
import type { Model, Outcome } from "./model.js";

export type Cond = "none" | "current" | "wrong";
export type WriteOp =
  | { t: "append"; loc: string; value: Uint8Array; msgId?: string; cond: Cond }
  | { t: "set"; loc: string; seq: number; value: Uint8Array }
  | { t: "delete"; loc: string; seq: number }
  | { t: "deleteAll"; loc: string; endSeq?: number }
  | { t: "kvSet"; loc: string; key: string; value: Uint8Array; ttlMs?: number; cond: Cond | "absent" }
  | { t: "kvDelete"; loc: string; key: string };

/** A write with its conditions resolved to numbers. */
export type ConcreteOp =
  | { t: "append"; loc: string; value: Uint8Array; opts: { msgId?: string; expectedLastSeq?: number } }
  | { t: "set"; loc: string; seq: number; value: Uint8Array }
  | { t: "delete"; loc: string; seq: number }
  | { t: "deleteAll"; loc: string; endSeq?: number }
  | { t: "kvSet"; loc: string; key: string; value: Uint8Array; opts: { ttlMs?: number; expectedRevision?: number } }
  | { t: "kvDelete"; loc: string; key: string };

export interface WorkloadLocations {
  streams: readonly string[];
  kvs: readonly string[];
  keys: readonly string[];
}

export function writeOpArb(value: fc.Arbitrary<Uint8Array>, locs: WorkloadLocations): fc.Arbitrary<WriteOp> {
  const seq = fc.integer({ min: 1, max: 12 });
  const cond = fc.constantFrom<Cond>("none", "none", "current", "wrong");
  const stream = fc.constantFrom(...locs.streams);
  const kv = fc.constantFrom(...locs.kvs);
  const key = fc.constantFrom(...locs.keys);
  return fc.oneof(
    { weight: 5, arbitrary: fc.record({ t: fc.constant("append" as const), loc: stream, value, msgId: fc.option(fc.constantFrom("m1", "m2", "m3"), { nil: undefined }), cond }, { requiredKeys: ["t", "loc", "value", "cond"] }) },
    { weight: 2, arbitrary: fc.record({ t: fc.constant("set" as const), loc: stream, seq, value }) },
    { weight: 2, arbitrary: fc.record({ t: fc.constant("delete" as const), loc: stream, seq }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant("deleteAll" as const), loc: stream, endSeq: fc.option(fc.integer({ min: 0, max: 14 }), { nil: undefined }) }, { requiredKeys: ["t", "loc"] }) },
    { weight: 4, arbitrary: fc.record({ t: fc.constant("kvSet" as const), loc: kv, key, value, ttlMs: fc.option(fc.integer({ min: 1, max: 5000 }), { nil: undefined }), cond: fc.constantFrom<Cond | "absent">("none", "none", "current", "wrong", "absent") }, { requiredKeys: ["t", "loc", "key", "value", "cond"] }) },
    { weight: 2, arbitrary: fc.record({ t: fc.constant("kvDelete" as const), loc: kv, key }) },
  );
}

/** Resolves the conditions of `op` against the model's current state. */
export function concretize(op: WriteOp, model: Model): ConcreteOp {
  switch (op.t) {
    case "append": {
      const l = model.locs.get(op.loc);
      const lastSeq = l?.kind === "stream" ? l.lastSeq : 0;
      const opts: { msgId?: string; expectedLastSeq?: number } = {};
      if (op.msgId !== undefined) opts.msgId = op.msgId;
      if (op.cond !== "none") opts.expectedLastSeq = op.cond === "current" ? lastSeq : lastSeq + 3;
      return { t: "append", loc: op.loc, value: op.value, opts };
    }
    case "kvSet": {
      const entry = model.locs.get(op.loc)?.kv.get(op.key);
      const live = entry && (entry.expiresAt === undefined || entry.expiresAt > model.now) ? entry.revision : 0;
      const opts: { ttlMs?: number; expectedRevision?: number } = {};
      if (op.ttlMs !== undefined) opts.ttlMs = op.ttlMs;
      if (op.cond === "current") opts.expectedRevision = live;
      if (op.cond === "wrong") opts.expectedRevision = live + 2;
      if (op.cond === "absent") opts.expectedRevision = 0;
      return { t: "kvSet", loc: op.loc, key: op.key, value: op.value, opts };
    }
    default:
      return op;
  }
}

/** The store's answer as an Outcome; anything thrown that is not a StrataError is rethrown (a bug). */
export async function outcome(p: Promise<unknown>): Promise<Outcome> {
  try {
    return { ok: true, result: await p };
  } catch (err) {
    if (!StrataError.is(err)) throw err;
    return { ok: false, code: err.code };
  }
}

export function applyToStore(store: Store, op: ConcreteOp): Promise<Outcome> {
  // A handle or call that throws synchronously (e.g. CLOSED) is an outcome like any other.
  return outcome(
    (async () => {
      switch (op.t) {
        case "append":
          return store.stream(op.loc).append({ value: op.value }, op.opts);
        case "set":
          return store.stream(op.loc).set(op.seq, { value: op.value });
        case "delete":
          return store.stream(op.loc).delete(op.seq);
        case "deleteAll":
          return store.stream(op.loc).deleteAll(op.endSeq === undefined ? undefined : { endSeq: op.endSeq });
        case "kvSet":
          return store.kv(op.loc).set(op.key, op.value, op.opts);
        case "kvDelete":
          return store.kv(op.loc).delete(op.key);
      }
    })(),
  );
}

export function applyToModel(model: Model, op: ConcreteOp): Outcome {
  switch (op.t) {
    case "append":
      return model.append(op.loc, op.value, op.opts);
    case "set":
      return model.set(op.loc, op.seq, op.value);
    case "delete":
      return model.delete(op.loc, op.seq);
    case "deleteAll":
      return model.deleteAll(op.loc, op.endSeq);
    case "kvSet":
      return model.kvSet(op.loc, op.key, op.value, op.opts);
    case "kvDelete":
      return model.kvDelete(op.loc, op.key);
  }
}

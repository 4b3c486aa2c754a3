/**
 * The operations of the tier model test (./tier-model.test.ts) and how one is run: the limits and
 * names the runs use, the write operations with their arbitraries, and `issue`, which runs a write
 * on the store and on the model (../engine/model.ts) alike. The compaction operations and their
 * steps are in ./tier-model-compaction.ts. Not a test file: fixed names and limits, no state.
 */
import fc from "fast-check";
import { StrataError } from "../../src/errors.js";
import type { Store } from "../../src/store.js";
import { checkpointKey } from "../../src/tier/segment-keys.js";
import type { Model, Outcome } from "../engine/model.js";
import type { CompactionOp } from "./tier-model-compaction.js";

const STREAMS = ["s/a", "s/b", "mixed"] as const;
const KVS = ["k/a", "k/b", "mixed"] as const;
export const KEYS = ["a", "b", "c", "d.e", "f/g"] as const;
export const SERVER_ID = "model-srv";
export const DEDUP_WINDOW_MS = 60_000;
export const LIMITS = {
  chunkBytes: 256,
  recordBytesMax: 8192,
  headersBytesMax: 1024,
  segmentBytesMax: 16_384,
  commitBatchBytesMax: 8192,
  scanPageSize: 3,
  dedupWindowMs: DEDUP_WINDOW_MS,
  // Small blocks, a block cache of about one record and few footers: reads of evicted segments
  // keep going back to the object store.
  blockBytes: 512,
  blockCacheBytes: 9000,
  footerCacheMax: 3,
  uploadRetryMaxMs: 20,
  sealIntervalMs: 100,
  objectAckTimeoutMs: 1500,
  closeUploadWaitMs: 500,
};

export type Cond = "none" | "current" | "wrong";
export type Ack = "local" | "object";
export type WriteOp =
  | { t: "append"; loc: string; value: Uint8Array; msgId?: string; cond: Cond; ack: Ack }
  | { t: "set"; loc: string; seq: number; value: Uint8Array; ack: Ack }
  | { t: "delete"; loc: string; seq: number; ack: Ack }
  | { t: "deleteAll"; loc: string; endSeq?: number; ack: Ack }
  | { t: "kvSet"; loc: string; key: string; value: Uint8Array; ttlMs?: number; cond: Cond | "absent"; ack: Ack }
  | { t: "kvDelete"; loc: string; key: string; ack: Ack };
export type Op =
  | WriteOp
  | { t: "group"; ops: WriteOp[] }
  | { t: "tick"; ms: number }
  | { t: "sweep" }
  | { t: "seal" }
  | { t: "upload" }
  | { t: "checkpoint"; ops: WriteOp[] }
  | { t: "outage"; ops: WriteOp[] }
  | { t: "reopen" }
  | { t: "crash"; pick: number }
  | { t: "restore"; checkpoint: boolean }
  | { t: "loseDisk"; checkpoint: boolean }
  | CompactionOp;

export function writeOpArb(value: fc.Arbitrary<Uint8Array>, objectAckWeight: number): fc.Arbitrary<WriteOp> {
  const seq = fc.integer({ min: 1, max: 12 });
  const cond = fc.constantFrom<Cond>("none", "none", "current", "wrong");
  const ack = fc.oneof({ weight: 10, arbitrary: fc.constant<Ack>("local") }, { weight: objectAckWeight, arbitrary: fc.constant<Ack>("object") });
  const stream = fc.constantFrom(...STREAMS);
  const kv = fc.constantFrom(...KVS);
  return fc.oneof(
    { weight: 5, arbitrary: fc.record({ t: fc.constant("append" as const), loc: stream, value, msgId: fc.option(fc.constantFrom("m1", "m2", "m3"), { nil: undefined }), cond, ack }, { requiredKeys: ["t", "loc", "value", "cond", "ack"] }) },
    { weight: 2, arbitrary: fc.record({ t: fc.constant("set" as const), loc: stream, seq, value, ack }) },
    { weight: 2, arbitrary: fc.record({ t: fc.constant("delete" as const), loc: stream, seq, ack }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant("deleteAll" as const), loc: stream, endSeq: fc.option(fc.integer({ min: 0, max: 14 }), { nil: undefined }), ack }, { requiredKeys: ["t", "loc", "ack"] }) },
    { weight: 4, arbitrary: fc.record({ t: fc.constant("kvSet" as const), loc: kv, key: fc.constantFrom(...KEYS), value, ttlMs: fc.option(fc.integer({ min: 1, max: 5000 }), { nil: undefined }), cond: fc.constantFrom<Cond | "absent">("none", "none", "current", "wrong", "absent"), ack }, { requiredKeys: ["t", "loc", "key", "value", "cond", "ack"] }) },
    { weight: 2, arbitrary: fc.record({ t: fc.constant("kvDelete" as const), loc: kv, key: fc.constantFrom(...KEYS), ack }) },
  );
}

export const smallValue = fc.uint8Array({ maxLength: 60 });
// Values over chunkBytes are split into chunk records, which can land in other blocks and segments.
export const anyValue = fc.oneof({ weight: 6, arbitrary: smallValue }, { weight: 1, arbitrary: fc.uint8Array({ minLength: 257, maxLength: 1500 }) });

export async function outcome(p: Promise<unknown>): Promise<Outcome> {
  try {
    return { ok: true, result: await p };
  } catch (err) {
    if (!StrataError.is(err)) throw err;
    return { ok: false, code: err.code };
  }
}

/** Runs one write on the store and the model; returns both outcomes (the store's still pending). */
export function issue(store: Store, model: Model, op: WriteOp): { store: Promise<Outcome>; model: Outcome } {
  const ack = { ack: op.ack };
  switch (op.t) {
    case "append": {
      const l = model.locs.get(op.loc);
      const lastSeq = l?.kind === "stream" ? l.lastSeq : 0;
      const opts: { msgId?: string; expectedLastSeq?: number } = {};
      if (op.msgId !== undefined) opts.msgId = op.msgId;
      if (op.cond !== "none") opts.expectedLastSeq = op.cond === "current" ? lastSeq : lastSeq + 3;
      return { store: outcome(store.stream(op.loc).append({ value: op.value }, { ...opts, ...ack })), model: model.append(op.loc, op.value, opts) };
    }
    case "set":
      return { store: outcome(store.stream(op.loc).set(op.seq, { value: op.value }, ack)), model: model.set(op.loc, op.seq, op.value) };
    case "delete":
      return { store: outcome(store.stream(op.loc).delete(op.seq, ack)), model: model.delete(op.loc, op.seq) };
    case "deleteAll": {
      const opts = op.endSeq === undefined ? ack : { endSeq: op.endSeq, ...ack };
      return { store: outcome(store.stream(op.loc).deleteAll(opts)), model: model.deleteAll(op.loc, op.endSeq) };
    }
    case "kvSet": {
      const entry = model.locs.get(op.loc)?.kv.get(op.key);
      const live = entry && (entry.expiresAt === undefined || entry.expiresAt > model.now) ? entry.revision : 0;
      const opts: { ttlMs?: number; expectedRevision?: number } = {};
      if (op.ttlMs !== undefined) opts.ttlMs = op.ttlMs;
      if (op.cond === "current") opts.expectedRevision = live;
      if (op.cond === "wrong") opts.expectedRevision = live + 2;
      if (op.cond === "absent") opts.expectedRevision = 0;
      return { store: outcome(store.kv(op.loc).set(op.key, op.value, { ...opts, ...ack })), model: model.kvSet(op.loc, op.key, op.value, opts) };
    }
    case "kvDelete":
      return { store: outcome(store.kv(op.loc).delete(op.key, ack)), model: model.kvDelete(op.loc, op.key) };
  }
}

export function isFault(err: unknown): err is StrataError {
  return StrataError.is(err, "UNAVAILABLE") || StrataError.is(err, "CORRUPT");
}

export function checkpointKeyOf(pos: { seg: number; off: number }): string {
  return checkpointKey(SERVER_ID, pos);
}

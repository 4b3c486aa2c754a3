/**
 * The narrow interface the stream and kv handles (and the large-value writer) depend on, instead
 * of reaching into `Store`'s index, log and tier: writes go through `submit` (the group commit),
 * reads through typed index reads (./index/index-reads.ts) and verified record reads. `Store`
 * implements it; another engine (a moved location's takeover, a test double) can too.
 *
 * Invariants the implementation keeps: `submit` applies writes in call order; every read sees
 * only committed writes; `read*` verify that a record is the one its index entry names (else
 * CORRUPT); `meta` throws WRONG_KIND for a location of the other kind and CLOSED once closed.
 */
import type { Committed } from "./commit-queue.js";
import type { KvPointer, StreamPointer } from "./index/index-reads.js";
import type { LocMeta } from "./index/lmdb-index.js";
import type { Limits } from "./limits.js";
import type { Pointer, StreamSetRecord } from "./log/record.js";
import type { AckMode, Inventory, Kind, KvEntry, StoredMessage } from "./types.js";
import type { WriteOp } from "./write-ops.js";

export type { KvPointer, StreamPointer } from "./index/index-reads.js";
export { kvLive } from "./index/index-reads.js";

/** A large value not read yet: its size, and its pieces on demand. */
export interface LargeRead {
  size: number;
  pieces: () => AsyncIterable<Uint8Array>;
}

export interface Engine {
  readonly limits: Limits;
  /** The engine's clock (ms since the epoch): what TTLs are compared against. */
  now(): number;

  /** Queues a write on the group commit; `committed` is absent when it wrote nothing (e.g. a repeated msgId). */
  submit(op: WriteOp): Promise<{ result?: unknown; committed?: Committed }>;
  /** The location's metadata, checking its kind. Undefined while nothing was written. */
  meta(location: string, kind: Kind): Readonly<LocMeta> | undefined;
  inventory(location: string): Inventory;

  /** Refuses `ack: "object"` up front when it cannot be honoured, before anything is written. */
  checkAck(ack: AckMode): void;
  /** Completes a write's acknowledgement (for `ack: "object"`, once its record is in the object store). */
  acked(ack: AckMode, committed: Committed | undefined): Promise<void>;
  /** The `ack: "object"` acknowledgement of a repeated msgId: once the original is shipped. */
  ackedSeq(location: string, seq: number): Promise<void>;
  /** Chunks written for a value that will never be made visible (an abandoned upload). */
  abandonChunks(chunks: Pointer[]): void;

  streamPointer(locId: number, seq: number): StreamPointer | undefined;
  scanStream(locId: number, fromSeq: number, limit: number): StreamPointer[];
  liveKv(locId: number, key: string, now: number): KvPointer | undefined;
  /** One page of kv entries with key > `afterKey`, expired ones included (see index-reads.ts). */
  scanKv(locId: number, afterKey: string | undefined, limit: number): KvPointer[];

  readMessage(location: string, seq: number, ptr: Pointer, lazy?: boolean): Promise<StoredMessage & { large?: LargeRead }>;
  readStreamRun(location: string, entries: ReadonlyArray<{ seq: number; ptr: Pointer }>, start: number): Promise<{ records: StreamSetRecord[]; next: number }>;
  readKvEntry(location: string, key: string, ptr: Pointer, lazy?: boolean): Promise<KvEntry & { large?: LargeRead }>;
  /** Assembles a value: inline, or the concatenation of its chunk records. */
  valueOf(rec: { value: Uint8Array; chunks?: Pointer[]; size: number }): Promise<Uint8Array>;
}

/**
 * Group commit. Every write of a store goes through this one queue; a single loop takes what has
 * queued up (bounded by `commitBatchMax` and `commitBatchBytesMax`), decides each operation
 * (`BatchView.prepare`), writes all resulting records with one write and one fdatasync, applies
 * them to the index in one transaction together with the recovery checkpoint, and only then
 * resolves the callers' promises. While a batch is being fsync'd the next one queues up, so
 * the number of fsyncs per write falls as concurrency rises.
 *
 * Invariant: a promise resolves only after the fsync covering its record, and the index never
 * reflects a record that is not durable in the log.
 */
import { assert } from "./assert.js";
import { StrataError } from "./errors.js";
import { IndexBatch } from "./index/apply.js";
import type { LmdbIndex } from "./index/lmdb-index.js";
import { frame } from "./log/framing.js";
import { encodeRecord, type LogRecord, type Pointer } from "./log/record.js";
import type { SegmentLog } from "./log/segment-log.js";
import type { Limits } from "./limits.js";
import { BatchView, opBytes, type WriteOp } from "./write-ops.js";

export interface Committed {
  record: LogRecord;
  ptr: Pointer;
  /** Entries removed by a deleteAll record. */
  removed: number;
}

interface Pending {
  /** A write, or (with `exclusive`) a function run alone between batches. */
  op: WriteOp;
  exclusive?: () => unknown;
  resolve: (value: { result?: unknown; committed?: Committed }) => void;
  reject: (err: unknown) => void;
}

export class CommitQueue {
  private queue: Pending[] = [];
  private running = false;
  private failed: StrataError | undefined;
  private idleWaiters: Array<() => void> = [];
  /** Number of records committed and batches written, for the benchmark. */
  stats = { records: 0, batches: 0 };

  constructor(
    private readonly log: SegmentLog,
    private readonly index: LmdbIndex,
    private readonly limits: Limits,
    private readonly onCommitted: (batch: Committed[]) => void,
    private readonly clock: () => number = Date.now,
  ) {}

  /** Queues one write; resolves to either a final result (nothing written) or the committed record. */
  submit(op: WriteOp): Promise<{ result?: unknown; committed?: Committed }> {
    if (this.failed) return Promise.reject(this.failed);
    if (this.queue.length >= this.limits.writeQueueMax) {
      return Promise.reject(
        new StrataError("UNAVAILABLE", `the write queue is full (writeQueueMax=${this.limits.writeQueueMax}); slow down and retry`),
      );
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ op, resolve, reject });
      if (!this.running) {
        this.running = true;
        // Start on a later tick so that writes issued together land in the same batch.
        setImmediate(() => void this.run());
      }
    });
  }

  /**
   * Runs `fn` between batches, with no log write in progress (e.g. to roll the active segment).
   * Resolves to its result; it is not subject to writeQueueMax.
   */
  exclusive<T>(fn: () => T): Promise<T> {
    if (this.failed) return Promise.reject(this.failed);
    return new Promise((resolve, reject) => {
      this.queue.push({ op: { op: "chunk", data: new Uint8Array(0) }, exclusive: fn, resolve: resolve as never, reject });
      if (!this.running) {
        this.running = true;
        setImmediate(() => void this.run());
      }
    });
  }

  /** Resolves once nothing is queued or being committed. */
  idle(): Promise<void> {
    if (!this.running) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /** Refuses all further writes (store closing, or a failure that needs a reopen). */
  fail(err: StrataError): void {
    this.failed ??= err;
  }

  private takeBatch(): Pending[] {
    if (this.queue[0]?.exclusive) return this.queue.splice(0, 1);
    let bytes = 0;
    let n = 0;
    while (n < this.queue.length && n < this.limits.commitBatchMax && !this.queue[n]!.exclusive) {
      bytes += opBytes(this.queue[n]!.op);
      if (n > 0 && bytes > this.limits.commitBatchBytesMax) break;
      n++;
    }
    return this.queue.splice(0, n);
  }

  private async run(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const batch = this.takeBatch();
        if (this.failed) {
          for (const p of batch) p.reject(this.failed);
          continue;
        }
        const only = batch[0]!;
        if (only.exclusive) {
          try {
            only.resolve(only.exclusive() as never);
          } catch (err) {
            only.reject(err);
          }
          continue;
        }
        await this.commit(batch);
      }
    } finally {
      this.running = false;
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  private async commit(batch: Pending[]): Promise<void> {
    const view = new BatchView(this.index, this.limits, this.clock());
    const writing: Array<{ p: Pending; record: LogRecord }> = [];
    for (const p of batch) {
      try {
        const prepared = view.prepare(p.op);
        if ("record" in prepared) writing.push({ p, record: prepared.record });
        else p.resolve({ result: prepared.result });
      } catch (err) {
        p.reject(err);
      }
    }
    if (writing.length === 0) return;
    let ptrs: Pointer[];
    try {
      ptrs = await this.log.writeBatch(writing.map((w) => frame(encodeRecord(w.record))));
    } catch (err) {
      const e = StrataError.is(err) ? err : new StrataError("IO", `log write failed: ${(err as Error).message}`, { cause: err });
      this.fail(e);
      for (const w of writing) w.p.reject(e);
      return;
    }
    assert(ptrs.length === writing.length, "one pointer per record");
    const committed: Committed[] = writing.map((w, i) => ({ record: w.record, ptr: ptrs[i]!, removed: 0 }));
    try {
      const now = this.clock();
      this.index.write(() => {
        const indexing = new IndexBatch(this.index, { replay: false, dedupWindowMs: this.limits.dedupWindowMs, now });
        for (const c of committed) c.removed = indexing.apply(c.record, c.ptr);
        indexing.finish();
        this.index.setCheckpoint({ seg: this.log.activeId, off: this.log.activeSize });
      });
    } catch (err) {
      // The records are durable but the index could not take them: recovery on reopen will
      // replay them. Refuse further writes so nothing builds on the inconsistent index.
      const e = new StrataError("INTERNAL", `index update failed (${(err as Error).message}); the records are durable in the log and are replayed when the store is reopened`, { cause: err });
      this.fail(e);
      for (const w of writing) w.p.reject(e);
      return;
    }
    this.stats.records += committed.length;
    this.stats.batches += 1;
    this.onCommitted(committed);
    committed.forEach((c, i) => writing[i]!.p.resolve({ committed: c }));
  }
}

/**
 * Group commit. Every write of a store goes through this one queue. Writes are taken in order
 * into the open batch (bounded by `commitBatchMax` and `commitBatchBytesMax`): each is decided
 * (`BatchView.prepare`) and its record encoded at once. A batch is written with one write and one
 * fdatasync, applied to the index in one transaction together with the recovery checkpoint, and
 * only then are its callers' promises resolved.
 *
 * The commit is pipelined: while one batch is being written and fsync'd (in the thread pool), the
 * writes arriving meanwhile are decided and encoded into the next batch, whose view of the state
 * includes the batch in flight (a BatchView over the one in flight); and once a batch is durable,
 * the next one's write starts before the durable one is applied to the index. So the CPU work of
 * a batch overlaps the disk wait of its neighbours, and the number of fsyncs per write falls as
 * concurrency rises. Only one batch is ever being written; batches are written, indexed and
 * resolved strictly in order, and the index's recovery checkpoint is the end of the last batch
 * it holds.
 *
 * Invariants: a promise resolves only after the fsync covering its record, and after the fsync of
 * every earlier write its decision may depend on (results that need no record, such as a repeated
 * msgId or a delete of something absent, resolve with their batch); the index never reflects a
 * record that is not durable in the log.
 *
 * Failures. A batch whose log write fails (IO: disk full, EIO) is answered IO as a whole, and the
 * log has cut it off again (SegmentLog.writeBatch), so none of it appears later; the batch decided
 * on top of it is not written but re-decided from the queue's head (its view held the failed
 * records), and the queue goes on: the next write is tried against the disk again, so writes work
 * again once there is space. A record the index cannot take is quarantined alone
 * (index/apply.ts `applyRecords`): its caller gets INTERNAL, every other record commits. When the
 * index cannot be written at all (its disk is full), the durable batch waits, unanswered, and is
 * tried again (`indexDurable`); only `fail()` (store closing) stops the queue.
 *
 * A write may produce two records (`Prepared.follow`: the sdelall a stream's `discard: "old"`
 * limit adds right after the write that put it over); both go in the same batch, back to back,
 * the caller is answered with the first, and the change hook sees both.
 */
import { assert } from "./assert.js";
import { backoff } from "./backoff.js";
import { WakeableSleep } from "./wakeable-sleep.js";
import { StrataError } from "./errors.js";
import { silentLogger, type Logger } from "./logger.js";
import { applyRecords } from "./index/apply.js";
import type { LmdbIndex } from "./index/lmdb-index.js";
import { FrameChunks } from "./log/framing.js";
import { encodeRecord, type LogRecord, type Pointer } from "./log/record.js";
import type { SegmentLog } from "./log/segment-log.js";
import type { Limits } from "./limits.js";
import type { StoreMetrics } from "./metrics/store-metrics.js";
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

interface InFlight {
  batch: OpenBatch;
  /** The pointers of its records once durable, or why the write failed. */
  written: Promise<Pointer[] | StrataError>;
}

/** A batch being filled: decided writes, their encoded frames, and the results that need no record. */
interface OpenBatch {
  view: BatchView;
  /** `p` is undefined for a record that follows its write's own (`Prepared.follow`). */
  writing: Array<{ p: Pending | undefined; record: LogRecord }>;
  /** Refused while being decided (CONFLICT, …); answered with the batch, as the refusal may depend on it. */
  refused: Array<{ p: Pending; err: unknown }>;
  /** Every write taken, in order: re-queued when the batch it was decided on top of fails. */
  members: Pending[];
  frames: FrameChunks;
  /** Decided without a record; resolved when the batch is (they may depend on earlier writes). */
  settled: Array<{ p: Pending; result: unknown }>;
  count: number;
  bytes: number;
}

export class CommitQueue {
  private queue: Pending[] = [];
  private running = false;
  /** Wakes the loop while it waits on a batch in flight (set only then). */
  private arrival: (() => void) | undefined;
  private wakeScheduled = false;
  private failed: StrataError | undefined;
  /** Whether the last log write failed (warned once per episode, not per write). */
  private writesFailing = false;
  /** Set by `requestClose`: a batch waiting for the index stops waiting. */
  private closeRequested = false;
  /** The wait between index retries, which requestClose ends early. */
  private readonly retryWait = new WakeableSleep();
  private idleWaiters: Array<() => void> = [];
  /** Number of records committed and batches written, for the benchmark. */
  stats = { records: 0, batches: 0 };
  /** Batch sizes and write+fdatasync latency, when the store records metrics (Store.instrument). */
  metrics: StoreMetrics | undefined;

  constructor(
    private readonly log: SegmentLog,
    private readonly index: LmdbIndex,
    private readonly limits: Limits,
    private readonly onCommitted: (batch: Committed[]) => void,
    private readonly clock: () => number = Date.now,
    /** Told (for the operator) of failing writes and of a record quarantined instead of applied. */
    private readonly logger: Logger = silentLogger,
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
      this.kick();
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
      this.kick();
    });
  }

  /**
   * Starts the loop, or wakes it while it waits on a batch in flight. Either happens later, so
   * that writes issued together are decided together: an idle queue starts once the current
   * callback and its microtasks are done (process.nextTick; every write a request, a batch
   * request or a socket read's worth of requests submits is in by then), not a turn of the event
   * loop later, which one write alone would wait for in vain. A queue busy with a write in flight
   * is woken on the next turn (setImmediate), so that a turn's arrivals join it together.
   */
  private kick(): void {
    if (!this.running) {
      this.running = true;
      process.nextTick(() => void this.run());
    } else if (this.arrival !== undefined && !this.wakeScheduled) {
      this.wakeScheduled = true;
      setImmediate(() => {
        this.wakeScheduled = false;
        const wake = this.arrival;
        this.arrival = undefined;
        wake?.();
      });
    }
  }

  /** Writes queued and not yet taken into a batch. */
  get depth(): number {
    return this.queue.length;
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

  private async run(): Promise<void> {
    // The batch whose log write is in progress, and the one being filled meanwhile.
    let inFlight: InFlight | undefined;
    let open: OpenBatch | undefined;
    try {
      for (;;) {
        if (this.failed) {
          if (open) this.rejectOpen(open, this.failed);
          open = undefined;
          for (const p of this.queue.splice(0)) p.reject(this.failed);
          if (inFlight) {
            // It was decided on top of what failed: refuse it too, once its write has settled.
            await inFlight.written;
            this.rejectOpen(inFlight.batch, this.failed);
          }
          return;
        }
        // Decide and encode what has queued, into the open batch (on top of the one in flight).
        while (this.queue.length > 0 && !this.queue[0]!.exclusive) {
          open ??= this.openBatch(inFlight?.batch.view);
          if (!this.fits(open, this.queue[0]!)) break;
          this.prepareInto(open, this.queue.shift()!);
        }
        if (inFlight === undefined) {
          if (open !== undefined && open.count > 0) {
            open.view.detach(); // everything before it is in the index now
            // Alone: one write, nothing queued behind it and no batch to answer meanwhile.
            inFlight = this.startWrite(open, open.count === 1 && this.queue.length === 0);
            open = undefined;
            continue;
          }
          open = undefined;
          const head = this.queue[0];
          if (head?.exclusive) {
            this.queue.shift();
            try {
              head.resolve(head.exclusive() as never);
            } catch (err) {
              head.reject(err);
            }
            continue;
          }
          if (this.queue.length === 0) return;
          continue;
        }
        // A log write is in progress: wait for it, or for more writes to decide meanwhile.
        const finished = await Promise.race([inFlight.written.then(() => true), new Promise<boolean>((resolve) => (this.arrival = () => resolve(false)))]);
        this.arrival = undefined;
        if (!finished) continue;
        const done = inFlight;
        const outcome = await done.written;
        inFlight = undefined;
        if (outcome instanceof StrataError) {
          // Nothing of `done` is in the log; what was decided on top of it is decided again.
          if (!this.writesFailing) this.logger.error({ event: "log_writes_failing", code: outcome.code, error: outcome.message }, `log writes are failing (${outcome.message}); writes get IO until the disk recovers, reads go on`);
          this.writesFailing = true;
          this.rejectOpen(done.batch, outcome);
          if (open !== undefined) this.queue.unshift(...open.members);
          open = undefined;
          continue;
        }
        if (this.writesFailing && done.batch.writing.length > 0) {
          this.writesFailing = false;
          this.logger.warn({ event: "log_writes_recovered" }, "log writes work again");
        }
        // Start the next batch's write first, so the disk works while this one is indexed.
        const next = open !== undefined && open.count > 0 ? open : undefined;
        if (next) {
          inFlight = this.startWrite(next);
          open = undefined;
        }
        await this.indexDurable(done.batch, outcome);
        next?.view.detach(); // `done` is in the index now
      }
    } finally {
      this.running = false;
      const waiters = this.idleWaiters;
      this.idleWaiters = [];
      for (const w of waiters) w();
    }
  }

  /**
   * Starts the log write of a batch (one write, one fdatasync); its outcome never rejects. `alone`:
   * the log may fdatasync it on the event loop (SegmentLog.writeBatch), nothing else waits on it.
   */
  private startWrite(batch: OpenBatch, alone = false): InFlight {
    if (batch.writing.length === 0) return { batch, written: Promise.resolve([]) };
    const m = this.metrics;
    const startedMs = m === undefined ? 0 : performance.now();
    const written = this.log.writeBatch(batch.frames.frames, alone).then(
      (ptrs) => {
        if (m !== undefined) {
          m.fsyncSeconds.observe((performance.now() - startedMs) / 1000);
          m.batchRecords.observe(ptrs.length);
        }
        return ptrs;
      },
      (err: unknown) => (StrataError.is(err) ? err : new StrataError("IO", `log write failed: ${(err as Error).message}`, { cause: err })),
    );
    return { batch, written };
  }

  private openBatch(parent: BatchView | undefined): OpenBatch {
    return { view: new BatchView(this.index, this.limits, this.clock(), parent), writing: [], refused: [], members: [], frames: new FrameChunks(), settled: [], count: 0, bytes: 0 };
  }

  /** Whether `p` may join the open batch (the first write always may). */
  private fits(open: OpenBatch, p: Pending): boolean {
    if (open.count === 0) return true;
    return open.count < this.limits.commitBatchMax && open.bytes + opBytes(p.op) <= this.limits.commitBatchBytesMax;
  }

  private prepareInto(open: OpenBatch, p: Pending): void {
    open.count += 1;
    open.bytes += opBytes(p.op);
    open.members.push(p);
    try {
      const prepared = open.view.prepare(p.op);
      if ("record" in prepared) {
        open.frames.add(encodeRecord(prepared.record));
        open.writing.push({ p, record: prepared.record });
        if (prepared.follow) {
          open.frames.add(encodeRecord(prepared.follow));
          open.writing.push({ p: undefined, record: prepared.follow });
        }
      } else {
        open.settled.push({ p, result: prepared.result });
      }
    } catch (err) {
      // Refused (CONFLICT, WRONG_KIND, …): it changed nothing, but the refusal may rest on a
      // write of the batch in flight, so it is answered (or re-decided) with this batch.
      open.refused.push({ p, err });
    }
  }

  private rejectOpen(open: OpenBatch, err: unknown): void {
    for (const w of open.writing) w.p?.reject(err);
    for (const s of open.settled) s.p.reject(err);
    for (const r of open.refused) r.p.reject(err);
  }

  /**
   * Applies a batch whose records are durable to the index, with the recovery checkpoint at the
   * end of its last record (a later batch's write may be in progress), then resolves its callers.
   */
  /**
   * Indexes a durable batch, however long the index takes to accept it: when the index cannot be
   * written at all (its disk is full), the batch's writers are not answered yet — their records
   * are durable and the index never reflects them before they are applied, so reads stay
   * consistent — and it is tried again with backoff; later writes wait behind it (bounded by
   * writeQueueMax). Nothing answered with an error can appear later this way. If the store closes
   * meanwhile, the writers are told their writes are durable: they become visible at the next open.
   */
  private async indexDurable(batch: OpenBatch, ptrs: Pointer[]): Promise<void> {
    const delays = backoff({ initialMs: Math.min(10, this.limits.indexRetryMaxMs), maxMs: this.limits.indexRetryMaxMs });
    for (let attempt = 0; ; attempt++) {
      const err = this.indexBatch(batch, ptrs, attempt > 0);
      if (err === undefined) {
        if (attempt > 0) this.logger.warn({ event: "index_writes_recovered", attempts: attempt }, "the index takes writes again; the writes that waited are acknowledged");
        return;
      }
      if (attempt === 0) this.logger.error({ event: "index_writes_failing", error: err.message }, `the index cannot be written (${err.message}); writes wait until it can (free disk space), reads go on`);
      if (this.closeRequested) {
        this.resolveDurable(batch, ptrs);
        return;
      }
      await this.retryWait.sleep(delays.next());
    }
  }

  /** The store is closing: a batch waiting for the index is left to the next open's replay. */
  requestClose(): void {
    this.closeRequested = true;
    this.retryWait.wake();
  }

  private resolveDurable(batch: OpenBatch, ptrs: Pointer[]): void {
    batch.writing.forEach((w, i) => w.p?.resolve({ committed: { record: w.record, ptr: ptrs[i]!, removed: 0 } }));
    for (const s of batch.settled) s.p.resolve({ result: s.result });
  }

  /**
   * Applies a durable batch to the index and answers its writers; returns the error when the index
   * could not be written at all (nothing answered then). `retry`: some of its records may already
   * be in the index from an earlier attempt, and are skipped as replay skips them.
   */
  private indexBatch(batch: OpenBatch, ptrs: Pointer[], retry: boolean): Error | undefined {
    const { writing, settled, refused } = batch;
    if (!retry) for (const r of refused) r.p.reject(r.err);
    if (writing.length === 0) {
      for (const s of settled) s.p.resolve({ result: s.result });
      return undefined;
    }
    assert(ptrs.length === writing.length, "one pointer per record");
    const committed: Committed[] = writing.map((w, i) => ({ record: w.record, ptr: ptrs[i]!, removed: 0 }));
    const end = ptrs[ptrs.length - 1]!;
    const failed = new Map<number, StrataError>();
    try {
      const now = this.clock();
      const items = committed.map((c) => ({ rec: c.record, ptr: c.ptr }));
      const applied = applyRecords(this.index, items, { replay: retry, dedupWindowMs: this.limits.dedupWindowMs, now }, { seg: end.seg, off: end.off + end.len });
      committed.forEach((c, i) => (c.removed = Math.max(0, applied.removed[i]!)));
      for (const q of applied.quarantined) {
        const where = `segment ${q.ptr.seg} offset ${q.ptr.off}`;
        this.logger.warn({ event: "record_quarantined", segment: q.ptr.seg, offset: q.ptr.off, location: q.loc, reason: q.reason, during: "write" }, `quarantined the record at ${where} (location "${q.loc}"): the index could not apply it (${q.reason}); it was refused and is skipped on every replay`);
        failed.set(q.i, new StrataError("INTERNAL", `the write could not be applied to the index (${q.reason}); it was not stored. Report this as a bug.`));
      }
    } catch (err) {
      // The index cannot be written at all; the records are durable: the caller tries again.
      return err instanceof Error ? err : new Error(String(err));
    }
    this.stats.records += committed.length;
    this.stats.batches += 1;
    this.onCommitted(failed.size === 0 ? committed : committed.filter((_, i) => !failed.has(i)));
    committed.forEach((c, i) => {
      const err = failed.get(i);
      if (err) writing[i]!.p?.reject(err);
      else writing[i]!.p?.resolve({ committed: c });
    });
    for (const s of settled) s.p.resolve({ result: s.result });
    return undefined;
  }
}

/**
 * Compaction (docs/compaction.md): the `Compactor` picks runs of sealed segments, rewrites each
 * into one output segment holding only the records the index still needs, switches the index to
 * it, and reclaims the inputs once nothing (a reader, a checkpoint, a takeover pin) needs them.
 * This file owns the policy, the order of the steps and the background timer; the output file is
 * written by ./log/compact-writer.ts, liveness and the switch transaction are ./index/compact-switch.ts.
 *
 * Invariants:
 * - One compaction at a time (a manual one waits for a background one).
 * - Crash-safe at every step: the output is complete and durable before its markers exist, the
 *   markers exist before the switch, and an input is deleted only after the switch's end, the
 *   retain time, and (with a tier) a checkpoint after the switch with every older one deleted
 *   first and no takeover pin covering it.
 * - The switch runs in chunks (./compact-switch-run.ts) with event-loop turns between them; once
 *   begun (the output "switching") it is only ever finished (a crash: at the next open; an error:
 *   at the next compaction), never discarded.
 * - Nothing is written on a dry run.
 */
export type { CompactDropped, CompactOptions, CompactPhase, CompactProgress, CompactReport } from "./compact-api.js";
export { compactFaultHook, CompactCrash, type CompactStep } from "./compact-fault.js";

import fs from "node:fs";
import { assert } from "./assert.js";
import { emptyDropped, type CompactDropped, type CompactOptions, type CompactProgress, type CompactReport } from "./compact-api.js";
import { RunRewriter, RunSkipped, ScratchBuffer, type CompactParts, type Scanned } from "./compact-rewrite.js";
import { faultPoint, CompactCrash } from "./compact-fault.js";
import { ByteRate, pickRuns, type Run, type SegmentView } from "./compact-policy.js";
import { Reclaimer } from "./compact-reclaim.js";
import { StrataError } from "./errors.js";
import type { Logger } from "./logger.js";
import { finishPendingSwitches, finishSwitch, eventLoopTurn, type SwitchDriver } from "./compact-switch-run.js";
import { SwitchRefused, beginSwitch, droppedTuples, keptTuples } from "./index/compact-switch.js";
import { dropJournal, writeJournalPieces } from "./index/switch-journal.js";
import { chunkSpans } from "./index/dead-chunks.js";
import { isForeign } from "./index/foreign-logs.js";
import { OutputWriter } from "./log/compact-writer.js";
import { listSegmentIds, segmentPath } from "./log/segment-files.js";
import { COMPACTED_SEG_BASE, isCompacted, writeLocalMarker, type Cover } from "./log/segment-set.js";
import { COMPACTED_NEXT_KEY, deleteOutput } from "./open-segments.js";
import { listCheckpoints } from "./tier/checkpoints.js";
import { pinnedCut } from "./tier/pins.js";
import { sealSegmentAsync } from "./tier/sealed-segment.js";
import { compactionMarkerKey, segmentKey, segmentsPrefix } from "./tier/segment-keys.js";
import { shipSegment } from "./tier/segment-ship.js";

export interface CompactorDeps extends CompactParts {
  logger: Logger;
  /** Runs `fn` alone between group commits (the switch must not fall between a batch's log write and its index apply). */
  exclusive: <T>(fn: () => T) => Promise<T>;
}

const EMPTY = new Uint8Array(0);


export class Compactor {
  private chain: Promise<unknown> = Promise.resolve();
  private running = false;
  private closed = false;
  /** Segments found damaged while compacting: never picked again by this process. */
  private readonly damaged = new Set<number>();
  /** Local inputs are read into one buffer for the whole of a compaction call (compact-rewrite.ts). */
  private readonly scratch = new ScratchBuffer();
  private readonly rate: ByteRate;
  private readonly reclaimer: Reclaimer;

  constructor(private readonly d: CompactorDeps) {
    this.rate = new ByteRate(d.limits.compactRateBytesPerSec);
    this.reclaimer = new Reclaimer(d);
  }

  /**
   * A compaction (`Store.compact`): one at a time, a second call waits for the first. `seal` is
   * run first when `opts.sealActive`, unless it is a dry run (sealing writes a segment; a dry run
   * writes nothing and leaves the active segment's records out of its figures).
   */
  compact(opts: CompactOptions, seal?: () => Promise<void>): Promise<CompactReport> {
    return this.serialised(async () => {
      if (opts.sealActive && !opts.dryRun && seal) await seal();
      return this.run({ all: opts.all ?? true, dryRun: opts.dryRun ?? false, measure: true, ...(opts.onProgress ? { onProgress: opts.onProgress } : {}) });
    });
  }

  /** The maintenance timer's pass: compact what passed the dead-fraction threshold, then reclaim. Skipped while one runs. */
  async background(): Promise<void> {
    if (this.running || this.closed) return;
    await this.serialised(() => this.run({ all: false, dryRun: false, measure: false, runsMax: 1 }));
  }

  /** Deletes what compactions left behind once nothing needs it (step 5); returns how many inputs. */
  reclaim(): Promise<number> {
    return this.serialised(() => this.reclaimer.pass(() => this.closed));
  }

  /** Stops: a compaction in progress gives up at its next slice (its output removed), the next ones do not start. */
  async close(): Promise<void> {
    this.closed = true;
    await this.chain.catch(() => undefined);
  }

  private serialised<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.catch(() => undefined).then(async () => {
      if (this.closed) throw new StrataError("CLOSED", "the store is closed; open it again to compact");
      this.running = true;
      try {
        return await fn();
      } finally {
        this.running = false;
      }
    });
    this.chain = next;
    return next;
  }

  private async run(o: { all: boolean; dryRun: boolean; measure: boolean; runsMax?: number; onProgress?: (p: CompactProgress) => void }): Promise<CompactReport> {
    const started = performance.now();
    const report: CompactReport = {
      dryRun: o.dryRun,
      runs: 0,
      segmentsBefore: 0,
      segmentsAfter: 0,
      localBytesBefore: 0,
      localBytesAfter: 0,
      dropped: emptyDropped(),
      droppedBytes: 0,
      keptRecords: 0,
      reclaimedSegments: 0,
      ms: 0,
    };
    // A switch an error left half done is finished first (its inputs are not yet superseded).
    if (!o.dryRun) await finishPendingSwitches(this.driver());
    const before = await this.views();
    report.segmentsBefore = before.views.length;
    if (o.measure) {
      report.localBytesBefore = this.localBytes();
      if (this.d.tier) report.objectBytesBefore = await this.objectBytes();
    }
    const made = new Set<number>();
    let runs = pickRuns(before.views, before.spans, this.d.limits, o.all);
    let estimate = { segments: report.segmentsBefore, bytes: report.localBytesBefore };
    while (runs.length > 0 && !this.closed) {
      // Each pass's outputs are never compacted again by the same call (nothing would be gained).
      const run = runs.find((r) => !r.inputs.every((i) => made.has(i.id)));
      if (!run) break;
      const out = await this.compactRun(run, o.dryRun, report, o.onProgress);
      if (out !== undefined) made.add(out);
      if (o.dryRun) {
        estimate = { segments: estimate.segments - run.inputs.length + 1, bytes: estimate.bytes };
        runs = runs.filter((r) => r !== run);
        continue;
      }
      if (o.runsMax !== undefined && report.runs >= o.runsMax) break;
      let now: Awaited<ReturnType<Compactor["views"]>>;
      try {
        now = await this.views();
      } catch (err) {
        // What is switched is done and durable; the rest waits for the next compaction.
        this.d.logger.warn({ event: "compaction_stopped", runs: report.runs, error: (err as Error).message }, `compaction stopped after ${report.runs} run(s): the object store could not be listed (${(err as Error).message}); the rest waits for the next one`);
        break;
      }
      runs = pickRuns(now.views, now.spans, this.d.limits, o.all);
    }
    this.scratch.release();
    if (!o.dryRun && !this.closed) {
      o.onProgress?.({ phase: "reclaim", bytesDone: 0, bytesTotal: 0 });
      try {
        report.reclaimedSegments = await this.reclaimer.pass(() => this.closed);
      } catch (err) {
        if (err instanceof CompactCrash) throw err;
        this.d.logger.warn({ event: "compaction_reclaim_failed", error: (err as Error).message }, `the reclaim of compacted segments failed (${(err as Error).message}); it is tried again later`);
      }
    }
    if (o.dryRun) {
      report.segmentsAfter = estimate.segments;
      report.localBytesAfter = Math.max(0, report.localBytesBefore - report.droppedBytes);
      if (report.objectBytesBefore !== undefined) report.objectBytesAfter = report.objectBytesBefore;
    } else {
      // The work is done and durable by now: a listing that fails here (the object store went
      // away) must not turn the call into a failure, so the "after" figures are best effort.
      report.segmentsAfter = await this.views().then(
        (v) => v.views.length,
        () => report.segmentsBefore - report.runs,
      );
      if (o.measure) {
        report.localBytesAfter = this.localBytes();
        if (this.d.tier) {
          try {
            report.objectBytesAfter = await this.objectBytes();
          } catch (err) {
            this.d.logger.warn({ event: "compaction_measure_failed", error: (err as Error).message }, `compaction finished, but the object store could not be listed to measure it (${(err as Error).message})`);
          }
        }
      }
    }
    report.ms = Math.round(performance.now() - started);
    return report;
  }

  /** The own segments of the resolved set, in log order, with why each may not be compacted now. */
  private async views(): Promise<{ views: SegmentView[]; spans: Map<number, number[]> }> {
    const { index, tier } = this.d;
    const active = this.d.log.activeId;
    const ids = new Set<number>(listSegmentIds(this.d.segmentsDir));
    for (const key of index.segs.getKeys({})) if (!isForeign(key)) ids.add(key);
    let cp: { seg: number; off: number } | undefined;
    let cut: number | undefined;
    if (tier) {
      const all = await listCheckpoints(tier.objects, this.d.serverId);
      cp = all[all.length - 1]?.pos;
      cut = await pinnedCut(tier.objects, this.d.serverId);
    }
    const views: SegmentView[] = [];
    for (const id of ids) {
      const info = index.segs.get(id);
      if (info?.state === "superseded") continue;
      if (isCompacted(id) && (info?.lo === undefined || info.hi === undefined)) continue; // an orphan: not in the set
      if (!isCompacted(id) && id > active) continue;
      const lo = info?.lo ?? id;
      const hi = info?.hi ?? id;
      const bytes = info?.bytes || this.localSize(id);
      const v: SegmentView = { id, lo, hi, bytes, dead: index.deadBytes.get(id) ?? 0 };
      const why = this.ineligible(id, hi, bytes, info?.state, cp, cut);
      if (why !== undefined) v.ineligible = why;
      views.push(v);
    }
    views.sort((a, b) => a.hi - b.hi || a.id - b.id);
    return { views, spans: chunkSpans(index) };
  }

  private ineligible(id: number, hi: number, bytes: number, state: string | undefined, cp: { seg: number; off: number } | undefined, cut: number | undefined): string | undefined {
    if (id === this.d.log.activeId) return "active";
    // Every record of an input must be in the index (a batch written across a roll is applied a
    // moment after the roll), and the index checkpoint must never name an input.
    const applied = this.d.index.checkpoint();
    if (applied === undefined || hi >= applied.seg) return "not yet wholly behind the index checkpoint";
    if (this.damaged.has(id) || state === "damaged") return "damaged";
    if (this.d.tier) {
      if (state !== "uploaded" && state !== "evicted") return `not in the object store (${state ?? "unknown"})`;
      if (cp === undefined) return "no checkpoint yet";
      const before = hi < cp.seg || (hi === cp.seg && (isCompacted(id) || (bytes > 0 && bytes <= cp.off)));
      if (!before) return "after the newest checkpoint";
    }
    for (const _ of this.d.index.openChunks.getKeys({ start: [id, 0], end: [id + 1, 0], limit: 1 })) return "holds a chunk of a value being written";
    if (cut !== undefined && (this.d.index.segs.get(id)?.lo ?? id) <= cut) return "pinned by a takeover";
    return undefined;
  }

  /** A segment's bytes on disk; the active segment counts up to its last record, not its pre-zeroed tail. */
  private localSize(id: number): number {
    try {
      const size = fs.statSync(segmentPath(this.d.segmentsDir, id)).size;
      return id === this.d.log.activeId ? Math.min(size, this.d.log.activeSize) : size;
    } catch {
      return 0;
    }
  }

  /** Bytes of the local segment files (what a report counts as local bytes). */
  localBytes(): number {
    let n = 0;
    for (const id of listSegmentIds(this.d.segmentsDir)) n += this.localSize(id);
    return n;
  }

  private async objectBytes(): Promise<number> {
    let n = 0;
    for await (const o of this.d.tier!.objects.list(segmentsPrefix(this.d.serverId))) n += o.size;
    return n;
  }

  /** A fresh output id (persisted before use, so it is never given twice). */
  private allocateId(): number {
    const { index } = this.d;
    const n = index.write(() => {
      const next = (index.sys.get(COMPACTED_NEXT_KEY) as number | undefined) ?? 0;
      index.sys.put(COMPACTED_NEXT_KEY, next + 1);
      return next;
    });
    const id = COMPACTED_SEG_BASE + n;
    assert(id < 2 ** 32, "compaction output ids stay below the foreign range");
    return id;
  }

  /** Compacts one run; returns the output id (undefined when the run was given up). */
  private async compactRun(run: Run, dryRun: boolean, report: CompactReport, onProgress?: (p: CompactProgress) => void): Promise<number | undefined> {
    faultPoint("picked");
    const id = dryRun ? COMPACTED_SEG_BASE : this.allocateId();
    const cover: Cover = { id, lo: run.lo, hi: run.hi };
    const writer = OutputWriter.create(this.d.segmentsDir, id, dryRun);
    let stage: "tmp" | "file" | "object" | "marked" | "journal" | "switching" = "tmp";
    let sealedBytes = 0;
    try {
      const scanned = await new RunRewriter(this.d, this.rate, this.damaged, () => this.closed, this.scratch).rewrite(run, writer, onProgress);
      const outBytes = await writer.finish();
      if (dryRun) {
        this.count(report, scanned);
        return undefined;
      }
      stage = "file";
      faultPoint("written", { out: id });
      const { tier } = this.d;
      if (tier) {
        onProgress?.({ phase: "upload", segment: id, bytesDone: 0, bytesTotal: outBytes });
        const raw = await fs.promises.readFile(segmentPath(this.d.segmentsDir, id));
        const sealed = await sealSegmentAsync(id, raw, this.d.limits.blockBytes, this.d.limits.recordBytesMax);
        await this.rate.take(sealed.byteLength, () => this.closed);
        stage = "object";
        const shipped = await shipSegment(tier.objects, segmentKey(this.d.serverId, id), id, sealed, raw, false);
        if (shipped.kind === "conflict") throw new RunSkipped(`the object store already holds other bytes under output ${id}'s name (another process with this server id?)`);
        sealedBytes = sealed.byteLength;
        faultPoint("uploaded", { out: id });
        await tier.objects.putIfAbsent(compactionMarkerKey(this.d.serverId, cover), EMPTY);
        stage = "marked";
        faultPoint("object-marker", { out: id });
        onProgress?.({ phase: "upload", segment: id, bytesDone: outBytes, bytesTotal: outBytes });
      }
      writeLocalMarker(this.d.segmentsDir, cover);
      stage = "marked";
      faultPoint("local-marker", { out: id });
      if (this.closed) throw new RunSkipped("the store is closing");
      onProgress?.({ phase: "switch", segment: id, bytesDone: 0, bytesTotal: scanned.kept.length });
      const inputs = run.inputs.map((s) => ({ id: s.id, bytes: s.bytes }));
      // The journal first (pieces in the index, a turn between them), then the first transaction.
      stage = "journal";
      const { index, limits } = this.d;
      const header = await writeJournalPieces(
        index,
        { out: cover, outBytes, sealedBytes, outState: tier ? "uploaded" : "sealed", inputs, outSpan: [...scanned.outSpan] },
        { list: scanned.kept, tuples: (slice) => keptTuples(id, slice) },
        { list: scanned.dropped, tuples: droppedTuples },
        limits.compactSwitchChunkRecords,
        eventLoopTurn,
      );
      faultPoint("journal", { out: id });
      await this.d.exclusive(() => beginSwitch(index, header, (seg) => index.segs.get(seg)?.hi ?? seg));
      stage = "switching";
      faultPoint("switch-begun", { out: id });
      const perPiece = limits.compactSwitchChunkRecords;
      await finishSwitch(this.driver((done) => onProgress?.({ phase: "switch", segment: id, bytesDone: Math.min(scanned.kept.length, done * perPiece), bytesTotal: scanned.kept.length })), id);
      this.count(report, scanned);
      faultPoint("switched", { out: id });
      return id;
    } catch (err) {
      if (err instanceof CompactCrash) throw err;
      if (stage === "switching") {
        // Entries point into the output already: it is finished, never discarded (next compaction or open).
        this.d.logger.warn({ event: "compaction_switch_unfinished", output: id, error: (err as Error).message }, `the switch of compaction output ${id} stopped half way (${(err as Error).message}); it is finished by the next compaction or open`);
        throw err;
      }
      writer.abort();
      if (stage === "journal") dropJournal(this.d.index, id);
      if (!dryRun && stage !== "tmp") await this.discard(cover, stage === "journal" ? "marked" : stage);
      if (err instanceof RunSkipped || err instanceof SwitchRefused) {
        if (!this.closed) this.d.logger.warn({ event: "compaction_run_given_up", segments: run.inputs.map((s) => s.id), reason: err.message }, `compaction of segments ${run.inputs.map((s) => s.id).join(", ")} given up: ${err.message}`);
        return undefined;
      }
      throw err;
    }
  }

  /** How the compactor drives a switch: each transaction in an exclusive section after an event-loop turn. */
  private driver(progress?: (done: number) => void): SwitchDriver {
    const { index, tier } = this.d;
    return {
      index,
      exclusive: (fn) => this.d.exclusive(fn),
      turn: eventLoopTurn,
      now: () => this.d.clock(),
      after: () => this.d.log.activeId,
      ended: (h) => {
        const ids = h.inputs.map((i) => i.id);
        tier?.superseded(ids);
        tier?.adoptOutput(h.out.id, h.outBytes, h.sealedBytes);
        this.reclaimer.switched(ids);
      },
      ...(progress ? { progress } : {}),
    };
  }

  private count(report: CompactReport, s: Scanned): void {
    report.runs++;
    for (const k of Object.keys(s.dropped_) as Array<keyof CompactDropped>) report.dropped[k] += s.dropped_[k];
    report.droppedBytes += s.droppedBytes;
    report.keptRecords += s.keptRecords;
  }

  /** Removes an output that was not switched in (open-segments.ts `deleteOutput`: markers first). */
  private async discard(cover: Cover, stage: "file" | "object" | "marked"): Promise<void> {
    const { tier } = this.d;
    try {
      await deleteOutput(this.d.segmentsDir, stage === "file" || !tier ? undefined : { objects: tier.objects, serverId: this.d.serverId }, cover.id, [cover], true);
    } catch (err) {
      // Left for the next open, which removes outputs the index does not know (open-segments.ts).
      this.d.logger.warn({ event: "compaction_output_not_removed", output: cover.id, error: (err as Error).message }, `compaction output ${cover.id} could not be removed (${(err as Error).message}); it is removed at the next open`);
    }
  }

}

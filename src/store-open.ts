/**
 * Opening a `Store`'s parts (./store.ts `openLocked` puts them together): the object store and
 * the takeover importer when there is a tier, the index recovered from the log (./recovery.ts),
 * the segment log, and then the cold tier, the compactor and the maintenance timers wired to them.
 *
 * Invariants it keeps:
 * - Whatever recovery found is said once, loudly, at open (`logRecoveryReport`): an index rebuilt
 *   from the log, records quarantined during replay, a torn tail cut, damaged segment ranges
 *   (an error: CORRUPT), imports redone with another revision, compaction orphans and outputs
 *   kept. Event names and messages are what operators search for: they do not change.
 * - No write survives a restart: chunks no set record references are dead at open
 *   (./index/dead-chunks.ts).
 * - A failed recovery closes the importer and the object store it opened (the caller releases the
 *   data lock).
 * - The tier hears of every sealed segment (the log's `onSealed`) before it starts, and starts from
 *   the local segment files and what recovery found in the object store.
 */
import path from "node:path";
import type { CommitQueue } from "./commit-queue.js";
import { Compactor } from "./compact.js";
import type { StoreConfig } from "./config.js";
import { sweepOpenChunks } from "./index/dead-chunks.js";
import type { LmdbIndex } from "./index/lmdb-index.js";
import type { Logger } from "./logger.js";
import type { ImportRecord } from "./log/record.js";
import { listSegmentIds } from "./log/segment-files.js";
import { SegmentLog } from "./log/segment-log.js";
import { startMaintenance } from "./maintenance.js";
import { openIndexAndRecover, type RecoveryReport } from "./recovery.js";
import type { Store } from "./store.js";
import { openObjectStore, type ObjectStore } from "./tier/object-store.js";
import { Importer, importRequestOf, importTmpDir } from "./tier/takeover.js";
import { Tier } from "./tier/tier.js";

export interface OpenedParts {
  objects: ObjectStore | undefined;
  importer: Importer | undefined;
  index: LmdbIndex;
  report: RecoveryReport;
  log: SegmentLog;
  segmentsDir: string;
}

/** Opens the object store (`given`, else the configured tier), recovers the index and opens the log. */
export async function openIndexAndLog(config: StoreConfig, forceRebuild: boolean, given: ObjectStore | undefined): Promise<OpenedParts> {
  const objects = given ?? (config.tier !== undefined ? openObjectStore(config.tier) : undefined);
  const segmentsDir = path.join(config.dir, "segments");
  const importer = objects ? new Importer(objects, config.limits, importTmpDir(config.dir), config.logger) : undefined;
  let opened: { index: LmdbIndex; report: RecoveryReport };
  try {
    // Replay redoes the imports its log holds (replay.ts), through the same importer.
    const prepareImport = importer ? (rec: ImportRecord) => importer.prepare(config.id, [importRequestOf(rec)], config.clock()).then((rows) => rows[0]!) : undefined;
    opened = await openIndexAndRecover(path.join(config.dir, "index"), segmentsDir, config.limits, config.clock(), {
      forceRebuild,
      ...(objects ? { tier: { objects, serverId: config.id, ...(prepareImport ? { prepareImport } : {}) } } : {}),
    });
  } catch (err) {
    await importer?.close();
    await objects?.close();
    throw err;
  }
  const { index, report } = opened;
  // No write survives a restart: chunks no set record references are dead (index/dead-chunks.ts).
  sweepOpenChunks(index);
  logRecoveryReport(report, config.logger);
  const log = SegmentLog.open(segmentsDir, config.limits, report.active, report.nextId, {}, config.io);
  log.setFsyncMode(config.fsync);
  return { objects, importer, index, report, log, segmentsDir };
}

/** Says what recovery found (see the invariants). */
function logRecoveryReport(report: RecoveryReport, logger: Logger): void {
  if (report.rebuilt && report.rebuildReason !== "requested" && report.replayed > 0) {
    logger.warn({ event: "index_rebuilt", reason: report.rebuildReason, records: report.replayed }, `index rebuilt from the log (${report.rebuildReason}); ${report.replayed} records replayed`);
  }
  for (const q of report.quarantined ?? []) {
    logger.warn({ event: "record_quarantined", segment: q.seg, offset: q.off, location: q.loc, reason: q.reason, during: "replay" }, `quarantined the record at segment ${q.seg} offset ${q.off} (location "${q.loc}") during replay: the index could not apply it (${q.reason}); it is skipped`);
  }
  if (report.cut) {
    const c = report.cut;
    logger.warn({ event: "torn_tail_cut", segment: c.seg, offset: c.off, bytes: c.bytes, reason: c.reason }, `cut ${c.bytes} bytes of unacknowledged tail from segment ${c.seg} at offset ${c.off}: ${c.reason}`);
  }
  for (const d of report.damaged) {
    logger.error({ event: "segment_damaged", code: "CORRUPT", segment: d.seg, offset: d.off, bytes: d.bytes, reason: d.reason }, `CORRUPT: segment ${d.seg} is damaged at offset ${d.off} (${d.bytes} bytes: ${d.reason}); the records after it are kept, reads of the damaged range answer CORRUPT. Restore the segment from a copy if you have one.`);
  }
  for (const m of report.importMismatches ?? []) {
    logger.warn({ event: "import_mismatch", location: m.loc, from: m.from, expected: m.expected, got: m.got }, `the import of "${m.loc}" from server "${m.from}" was redone from the object store with revision ${m.got}, but it had revision ${m.expected} when it was made: the source's data changed since (a segment or checkpoint was replaced or removed)`);
  }
  for (const o of report.orphans) {
    logger.warn({ event: "compaction_orphan", output: o.id, removed: o.removed, ...(o.removed ? {} : { error: o.error }) }, o.removed ? `compaction output ${o.id} was an orphan (its compaction never switched in); deleted with its markers, its inputs are used` : `compaction output ${o.id} is an orphan but could not be deleted from the object store (${o.error}); it is never read, and deleted at the next open`);
  }
  for (const out of report.switchesFinished) {
    logger.warn({ event: "compaction_switch_finished", output: out }, `the switch of compaction output ${out} was cut short (a crash or an error during it); finished from its journal in the index before serving`);
  }
  for (const c of report.unknownOutputsKept) {
    logger.warn({ event: "compaction_output_kept", output: c.id, lo: c.lo, hi: c.hi }, `compaction output ${c.id} (segments ${c.lo}..${c.hi}) is unknown to the index but its inputs are gone; it is kept and replayed`);
  }
  if (report.damagedIndexMovedTo) logger.warn({ event: "index_damaged", movedTo: report.damagedIndexMovedTo }, `the index file was damaged; moved to ${report.damagedIndexMovedTo} and rebuilt from the log (delete it once it is no longer needed)`);
}

/** Starts the cold tier of a store with an object store, hearing of every segment the log seals. */
export function startTier(objects: ObjectStore, config: StoreConfig, parts: { index: LmdbIndex; log: SegmentLog; report: RecoveryReport; segmentsDir: string }, requestSeal: () => void): Tier {
  const { index, log, report, segmentsDir } = parts;
  const tier = new Tier(objects, config.id, segmentsDir, index, config.limits, {
    requestSeal,
    forgetLocal: (seg) => log.forget(seg),
    activeSegment: () => log.activeId,
    logger: config.logger,
  });
  log.setEvents({ onSealed: (seg, bytes) => tier.onSealed(seg, bytes) });
  tier.start(listSegmentIds(segmentsDir), report.tierIds, report.tierSizes);
  return tier;
}

/** The store's compactor (./compact.ts), running under the commit queue's exclusive section. */
export function newCompactor(config: StoreConfig, parts: { index: LmdbIndex; log: SegmentLog; segmentsDir: string }, tier: Tier | undefined, queue: CommitQueue): Compactor {
  return new Compactor({
    index: parts.index,
    log: parts.log,
    segmentsDir: parts.segmentsDir,
    limits: config.limits,
    serverId: config.id,
    clock: config.clock,
    logger: config.logger,
    tier,
    exclusive: (fn) => queue.exclusive(fn),
  });
}

/** Starts the store's maintenance timers (./maintenance.ts); returns what stops them. */
export function startStoreMaintenance(s: Store, config: StoreConfig, log: SegmentLog): () => void {
  const tier = s.tier;
  return startMaintenance({
    limits: config.limits,
    logger: config.logger,
    sweep: () => s.sweep(),
    sealActive: () => s.sealActive(),
    dirtySince: () => log.dirtySince,
    records: () => s.stats().records,
    ...(config.compaction ? { compact: () => s.compactor.background() } : {}),
    ...(tier ? { checkpoint: () => tier.checkpoint() } : {}),
  });
}

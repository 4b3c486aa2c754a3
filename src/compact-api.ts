/**
 * The types of compaction's engine API (docs/compaction.md, "Engine API"): `Store.compact`'s
 * options, progress and report. Re-exported by ./compact.ts.
 */
export type CompactPhase = "scan" | "write" | "upload" | "switch" | "reclaim";

export interface CompactProgress {
  phase: CompactPhase;
  segment?: number;
  bytesDone: number;
  bytesTotal: number;
}

export interface CompactOptions {
  /** Decide and report, write nothing. */
  dryRun?: boolean;
  /** Seal the active segment first (with a tier: wait for its upload and a checkpoint). */
  sealActive?: boolean;
  /** Every eligible run, whatever its dead fraction (the manual default: true). */
  all?: boolean;
  onProgress?: (p: CompactProgress) => void;
}

export interface CompactDropped {
  overwritten: number;
  deleted: number;
  expired: number;
  chunks: number;
  config: number;
}

export interface CompactReport {
  dryRun: boolean;
  runs: number;
  /** Own segments in the resolved set. */
  segmentsBefore: number;
  segmentsAfter: number;
  /** Segment files on disk. */
  localBytesBefore: number;
  localBytesAfter: number;
  /** Sealed objects (with a tier). */
  objectBytesBefore?: number;
  objectBytesAfter?: number;
  dropped: CompactDropped;
  droppedBytes: number;
  keptRecords: number;
  /** Inputs deleted (local and/or object) by this call. */
  reclaimedSegments: number;
  ms: number;
}

export const emptyDropped = (): CompactDropped => ({ overwritten: 0, deleted: 0, expired: 0, chunks: 0, config: 0 });

/**
 * The write operations the commit queue takes (./commit-queue.ts) and what deciding one gives
 * (`Prepared`); decided by `BatchView` (./write-ops.ts). Kept apart so that callers that only
 * build operations (handles, the sweeps, takeovers) do not depend on how they are decided.
 */
import type { ImportRecord, LogRecord, Pointer } from "./log/record.js";
import type { Headers, Kind, LocationLimits } from "./types.js";

export interface ValueParts {
  value: Uint8Array;
  headers?: Headers;
  /** Set when the value was written ahead as chunk records. */
  chunks?: Pointer[];
  size: number;
}

export type WriteOp =
  | ({ op: "append"; loc: string; timestamp?: number; msgId?: string; expectedLastSeq?: number } & ValueParts)
  | ({ op: "sset"; loc: string; seq: number; timestamp?: number } & ValueParts)
  | { op: "sdel"; loc: string; seq: number }
  | { op: "sdelall"; loc: string; endSeq?: number }
  /**
   * The maxAgeMs sweep's drop (./maintenance.ts): an sdelall up to `endSeq`, written only if the
   * stream's entries up to there are still exactly `seen` ([seq, seg, off], as the sweep read their
   * timestamps); otherwise nothing is written and the next sweep looks again.
   */
  | { op: "sdrop"; loc: string; endSeq: number; seen: Array<[seq: number, seg: number, off: number]> }
  /** A location's limits (the whole configuration, validated); creates the location with `kind`. */
  | { op: "config"; loc: string; kind: Kind; limits: LocationLimits }
  | ({ op: "kset"; loc: string; key: string; ttlMs?: number; expectedRevision?: number } & ValueParts)
  | { op: "kdel"; loc: string; key: string }
  | { op: "kexpire"; loc: string; key: string; rev: number }
  | { op: "chunk"; data: Uint8Array }
  /** A takeover's import record, its rows prepared beforehand (tier/takeover.ts, index/import-rows.ts). */
  | { op: "import"; record: ImportRecord };

/**
 * What `prepare` decided: a record to write (and `follow`, a record a limit adds right after it in
 * the same batch: the sdelall of a stream's oldest messages), or a final result with nothing to write.
 */
export type Prepared = { record: LogRecord; follow?: LogRecord } | { result: unknown };

export function opBytes(op: WriteOp): number {
  switch (op.op) {
    case "append":
    case "sset":
    case "kset":
      return op.chunks ? 256 : op.value.byteLength + 256;
    case "chunk":
      return op.data.byteLength + 64;
    default:
      return 128;
  }
}

/**
 * Scanning one of an origin server's segments for a takeover (./takeover.ts): its records with
 * their values left out (an index needs only a value's size and chunk pointers), where each is,
 * and the damaged ranges, each skipped as recovery skips them and reported loudly (CORRUPT), never
 * silently. `bytes` estimates what the scan holds in memory, for the importer's scan cache
 * (`importScanCacheBytes`); a segment's values are never held past the scan.
 */
import type { LogRecord, Pointer } from "../log/record.js";
import { scanRecords } from "../log/frame-scan.js";
import { SEGMENT_HEADER_BYTES } from "../log/segment-files.js";
import type { Logger } from "../logger.js";

/** Where a scanned record of an origin segment is, and the record with its value left out. */
export interface ScannedRecord {
  rec: Exclude<LogRecord, { t: "chunk" }>;
  ptr: Pointer;
}

export interface ScannedSegment {
  records: ScannedRecord[];
  damaged: Array<{ off: number; bytes: number; reason: string }>;
  bytes: number;
}

const EMPTY = new Uint8Array(0);

/** The records of unsealed segment `id` of server `from` (`raw`), values left out; counts damaged ranges into `stats`. */
export function scanOriginSegment(raw: Buffer, id: number, from: string, recordBytesMax: number, logger: Logger, stats: { damagedRanges: number }): ScannedSegment {
  const out: ScannedSegment = { records: [], damaged: [], bytes: 64 };
  for (const step of scanRecords(raw, SEGMENT_HEADER_BYTES, recordBytesMax)) {
    if (step.kind === "damaged") {
      const bytes = (step.next ?? raw.byteLength) - step.off;
      out.damaged.push({ off: step.off, bytes, reason: step.reason });
      stats.damagedRanges++;
      logger.error({ event: "takeover_segment_damaged", code: "CORRUPT", segment: id, from, offset: step.off, bytes, reason: step.reason }, `CORRUPT: segment ${id} of server "${from}" is damaged at offset ${step.off} (${bytes} bytes: ${step.reason}); a takeover skips the range, as recovery does`);
      continue;
    }
    if (step.rec.t === "chunk") continue;
    const rec = withoutValue(step.rec);
    out.records.push({ rec, ptr: { seg: id, off: step.off, len: step.next - step.off } });
    out.bytes += 96 + 2 * rec.loc.length + recordExtraBytes(rec);
  }
  return out;
}

/** A location record with its value bytes left out (an index needs only its size and chunk pointers). */
function withoutValue(rec: Exclude<LogRecord, { t: "chunk" }>): Exclude<LogRecord, { t: "chunk" }> {
  if (rec.t !== "sset" && rec.t !== "kset") return rec;
  return { ...rec, value: EMPTY };
}

function recordExtraBytes(rec: Exclude<LogRecord, { t: "chunk" }>): number {
  switch (rec.t) {
    case "sset":
      return (rec.msgId?.length ?? 0) * 2 + (rec.headers ? JSON.stringify(rec.headers).length * 2 : 0) + (rec.chunks?.length ?? 0) * 48;
    case "kset":
      return rec.key.length * 2 + (rec.headers ? JSON.stringify(rec.headers).length * 2 : 0) + (rec.chunks?.length ?? 0) * 48;
    case "kdel":
      return rec.key.length * 2;
    case "import":
      return rec.from.length * 2 + (rec.ckpt?.length ?? 0) * 2;
    default:
      return 0;
  }
}

/**
 * What the compaction crash tests check about a data directory's segment files against the index
 * (docs/compaction.md, "One compaction, step by step"): after an open, nothing of a half-done
 * compaction is left unaccounted for. Shared by the engine model test, the tier model test and
 * the kill -9 test (compact-crash.test.ts).
 *
 * Invariants (each problem is reported as a message):
 * - no `.tmp` file: an output that was still being written is removed at open (the log's
 *   `prepared.tmp` / `prepared.pre`, the next segment file being zeroed in the background while the
 *   store is open, are its own: src/log/segment-prepare.ts; test/log/zero-tail.test.ts checks
 *   that an open removes a half-zeroed one);
 * - every compaction output file and every local marker names an output the index knows (`segs`);
 *   an unknown one is an orphan the open should have deleted;
 * - every output the index knows whose file is on the disk has its local marker, or a rebuild of
 *   the index from the log (which trusts only marked outputs) would ignore it and lose its records;
 * - every own segment the index knows as on the disk (not evicted, not superseded) has its file.
 *   A superseded input may be gone already: a reclaim stopped half way finishes later.
 */
import fs from "node:fs";
import path from "node:path";
import type { SegmentInfo } from "../../src/index/lmdb-index.js";

export const COMPACTED_BASE = 2 ** 31;
const FOREIGN_BASE = 2 ** 32;
const SEG = /^([0-9a-f]{16})\.seg$/;
const MARKER = /^([0-9a-f]+)-([0-9a-f]+)-([0-9a-f]+)\.cmp$/;

export interface SegmentFiles {
  segs: number[];
  markers: Array<{ id: number; lo: number; hi: number }>;
  tmp: string[];
  /** The log's next segment file, being prepared or ready (not a compaction's). */
  prepared: string[];
  other: string[];
}

const PREPARED = new Set(["prepared.tmp", "prepared.pre"]);

export function listSegmentFiles(segmentsDir: string): SegmentFiles {
  const out: SegmentFiles = { segs: [], markers: [], tmp: [], prepared: [], other: [] };
  for (const name of fs.existsSync(segmentsDir) ? fs.readdirSync(segmentsDir) : []) {
    const s = SEG.exec(name);
    const m = MARKER.exec(name);
    if (s) out.segs.push(Number.parseInt(s[1]!, 16));
    else if (m) out.markers.push({ id: Number.parseInt(m[1]!, 16), lo: Number.parseInt(m[2]!, 16), hi: Number.parseInt(m[3]!, 16) });
    else if (PREPARED.has(name)) out.prepared.push(name);
    else if (name.includes(".tmp")) out.tmp.push(name);
    else out.other.push(name);
  }
  out.segs.sort((a, b) => a - b);
  return out;
}

/** Problems of the files in `segmentsDir` given the index's `segs` table; empty when none. */
export function segmentFileProblems(segmentsDir: string, segs: ReadonlyMap<number, SegmentInfo>): string[] {
  const files = listSegmentFiles(segmentsDir);
  const problems: string[] = [];
  for (const t of files.tmp) problems.push(`half-written file ${t} left in the segments directory`);
  const onDisk = new Set(files.segs);
  const marked = new Set(files.markers.map((m) => m.id));
  for (const id of files.segs) {
    if (id >= COMPACTED_BASE && !segs.has(id)) problems.push(`orphan output ${hex(id)}.seg: the index does not know it`);
  }
  for (const m of files.markers) {
    const info = segs.get(m.id);
    if (!info) problems.push(`orphan marker of output ${hex(m.id)}: the index does not know it`);
    else if (info.lo !== undefined && (info.lo !== m.lo || info.hi !== m.hi)) problems.push(`marker of ${hex(m.id)} covers ${m.lo}..${m.hi}, the index says ${info.lo}..${info.hi}`);
  }
  for (const [id, info] of segs) {
    if (id >= FOREIGN_BASE) continue;
    if (info.state === "evicted" || info.state === "superseded") continue;
    if (!onDisk.has(id)) problems.push(`segment ${hex(id)} is ${info.state} in the index but its file is missing`);
    if (id >= COMPACTED_BASE && onDisk.has(id) && !marked.has(id)) problems.push(`output ${hex(id)} is in the index and on the disk without its marker (a rebuild would drop it)`);
  }
  return problems;
}

/** The index's `segs` table as a Map. */
export function segsOf(table: { getRange(): Iterable<{ key: unknown; value: SegmentInfo }> }): Map<number, SegmentInfo> {
  const out = new Map<number, SegmentInfo>();
  for (const { key, value } of table.getRange()) if (typeof key === "number") out.set(key, value);
  return out;
}

function hex(n: number): string {
  return n.toString(16).padStart(16, "0");
}

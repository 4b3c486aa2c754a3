/**
 * The segment-set rule (src/log/segment-set.ts): after any sequence of compactions over runs of
 * adjacent segments, with inputs deleted or kept, outputs left without a marker (a crash before
 * it), markers left without their output (a reclaim cut short) and local and object markers both
 * listed, the resolved set is exactly the model's log: a tiling in order, every original position
 * covered exactly once. Plus the marker names and files.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import {
  COMPACTED_SEG_BASE,
  isCompacted,
  listLocalMarkers,
  localMarkerName,
  parseLocalMarkerName,
  removeLocalMarker,
  resolveSegments,
  writeLocalMarker,
  type Cover,
  type SegmentEntry,
} from "../../src/log/segment-set.js";
import { listSegmentIds, segmentFileName } from "../../src/log/segment-files.js";
import { compactionMarkerKey, parseCompactionMarkerKey, parsePinKey, pinKey } from "../../src/tier/segment-keys.js";

interface Step {
  /** Where the run starts among the current entries, and how many it takes (modulo what exists). */
  start: number;
  len: number;
  marked: boolean;
  deleteInputs: boolean;
  /** Delete an input output's marker after the output itself (a reclaim cut short the other way). */
  keepMarkerOfDeleted: boolean;
}

const stepArb: fc.Arbitrary<Step> = fc.record({
  start: fc.nat(40),
  len: fc.integer({ min: 1, max: 6 }),
  marked: fc.boolean(),
  deleteInputs: fc.boolean(),
  keepMarkerOfDeleted: fc.boolean(),
});

describe("resolveSegments", () => {
  it("yields the model's tiling after any sequence of compactions", () => {
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 25 }),
        fc.array(stepArb, { maxLength: 12 }),
        fc.boolean(),
        fc.nat(),
        (positions, steps, duplicateMarkers, shuffleSeed) => {
          const normals = [...positions].sort((a, b) => a - b);
          // The model: the log as it is meant to be read.
          let model: SegmentEntry[] = normals.map((id) => ({ id, lo: id, hi: id, order: id }));
          const presentNormals = new Set(normals);
          const presentOutputs = new Set<number>();
          const markers = new Map<number, Cover>();
          let next = 0;
          for (const s of steps) {
            if (model.length === 0) break;
            const start = s.start % model.length;
            const run = model.slice(start, start + s.len);
            const out: Cover = { id: COMPACTED_SEG_BASE + next++, lo: run[0]!.lo, hi: run[run.length - 1]!.hi };
            presentOutputs.add(out.id);
            if (!s.marked) continue; // a crash before the marker: an orphan, never read
            markers.set(out.id, out);
            model = [...model.slice(0, start), { ...out, order: out.hi }, ...model.slice(start + run.length)];
            if (s.deleteInputs) {
              for (const e of run) {
                if (isCompacted(e.id)) {
                  presentOutputs.delete(e.id);
                  if (!s.keepMarkerOfDeleted) markers.delete(e.id);
                } else presentNormals.delete(e.id);
              }
            }
          }
          let markerList = [...markers.values()];
          if (duplicateMarkers) markerList = [...markerList, ...markerList.filter((_, i) => i % 2 === 0)];
          const rotate = <T>(xs: T[]): T[] => (xs.length === 0 ? xs : [...xs.slice(shuffleSeed % xs.length), ...xs.slice(0, shuffleSeed % xs.length)]);
          const r = resolveSegments(rotate([...presentNormals]), rotate([...presentOutputs]), rotate(markerList));
          expect(r.entries).toEqual(model);
          // Every original position is covered exactly once, in order.
          const covered = normals.map((p) => r.entries.filter((e) => e.lo <= p && p <= e.hi).length);
          expect(covered.every((n) => n === 1)).toBe(true);
          for (let i = 1; i < r.entries.length; i++) expect(r.entries[i]!.order).toBeGreaterThan(r.entries[i - 1]!.hi);
          // Orphans are exactly the present outputs never marked; superseded ones are present and not read.
          const read = new Set(r.entries.map((e) => e.id));
          for (const id of r.orphans) expect(markers.has(id) || read.has(id)).toBe(false);
          for (const id of r.superseded) expect(read.has(id)).toBe(false);
          for (const id of [...presentNormals, ...presentOutputs]) expect(read.has(id) || r.superseded.includes(id) || r.orphans.includes(id)).toBe(true);
        },
      ),
      { numRuns: 500 },
    );
  });

  it("ignores a marker whose output is gone and one that would cut an entry in two", () => {
    const B = COMPACTED_SEG_BASE;
    // Output B+0 covers 2..3 (valid); B+1 claims 3..4, which cuts B+0's entry: ignored, so 4 stays.
    const r = resolveSegments([1, 2, 3, 4], [B, B + 1], [{ id: B, lo: 2, hi: 3 }, { id: B + 1, lo: 3, hi: 4 }, { id: B + 2, lo: 1, hi: 4 }]);
    expect(r.entries.map((e) => e.id)).toEqual([1, B, 4]);
    expect(r.ignoredMarkers.map((c) => c.id).sort()).toEqual([B + 1, B + 2]);
    expect(r.orphans).toEqual([B + 1]);
    expect(r.superseded).toEqual([2, 3]);
  });

  it("believes neither of two markers that disagree about one output", () => {
    const B = COMPACTED_SEG_BASE;
    const r = resolveSegments([1, 2, 3], [B], [{ id: B, lo: 1, hi: 2 }, { id: B, lo: 1, hi: 3 }]);
    expect(r.entries.map((e) => e.id)).toEqual([1, 2, 3]);
    expect(r.orphans).toEqual([B]);
  });
});

describe("marker names and files", () => {
  const dirs: string[] = [];
  afterEach(() => dirs.splice(0).forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

  it("round-trips covers through local names and object keys, and refuses malformed ones", () => {
    const c = { id: COMPACTED_SEG_BASE + 7, lo: 3, hi: 12 };
    expect(parseLocalMarkerName(localMarkerName(c))).toEqual(c);
    expect(parseCompactionMarkerKey("srv-1", compactionMarkerKey("srv-1", c))).toEqual(c);
    expect(parseCompactionMarkerKey("srv", compactionMarkerKey("srv-1", c))).toBeUndefined();
    // lo > hi, a normal id as output, an output id as lo: never a cover.
    expect(parseLocalMarkerName(localMarkerName({ id: c.id, lo: 12, hi: 3 }))).toBeUndefined();
    expect(parseLocalMarkerName(localMarkerName({ id: 5, lo: 1, hi: 3 }))).toBeUndefined();
    expect(parseLocalMarkerName(localMarkerName({ id: c.id, lo: c.id, hi: c.id }))).toBeUndefined();
    expect(parsePinKey("a-b", pinKey("a-b", "imp-orter-2", 0x1f))).toEqual({ importer: "imp-orter-2", cut: 0x1f });
    expect(parsePinKey("a", pinKey("a-b", "x", 1))).toBeUndefined();
  });

  it("writes, lists and removes local markers; segment listings ignore markers and temporary files", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "strata-segset-"));
    dirs.push(dir);
    const a = { id: COMPACTED_SEG_BASE + 1, lo: 1, hi: 4 };
    const b = { id: COMPACTED_SEG_BASE, lo: 5, hi: 5 };
    writeLocalMarker(dir, a);
    writeLocalMarker(dir, b);
    fs.writeFileSync(path.join(dir, segmentFileName(3)), "");
    fs.writeFileSync(path.join(dir, `${segmentFileName(COMPACTED_SEG_BASE + 2)}.tmp`), "");
    fs.writeFileSync(path.join(dir, "junk.cmp"), "");
    expect(listLocalMarkers(dir)).toEqual([b, a]);
    expect(listSegmentIds(dir)).toEqual([3]);
    removeLocalMarker(dir, a);
    removeLocalMarker(dir, a);
    expect(listLocalMarkers(dir)).toEqual([b]);
  });
});

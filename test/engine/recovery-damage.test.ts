/**
 * Damage in the middle of the log is corruption, not a torn tail (issue #8 item 2): recovery cuts
 * only when nothing valid follows a bad record, and otherwise skips the damaged range, reports it
 * and keeps every record after it. Tested byte by byte (STYLE.md habit 9): `resync` on every flip
 * of every byte of a small segment and every truncation; the engine on flipped bytes of a
 * small last segment at every record's header bytes and across its body, and truncations there; and the scenario of the issue, 2,000 acknowledged
 * messages with one flipped byte in the middle, of which 1,999 must be kept. A value holding a
 * forged frame never becomes a record, whatever byte of the record holding it is damaged.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Store, type StoreOptions } from "../../src/mod.js";
import { resync, validFrameAt } from "../../src/log/frame-scan.js";
import { frame, parseFrame } from "../../src/log/framing.js";
import { decodeRecord, encodeRecord, type LogRecord } from "../../src/log/record.js";
import { SEGMENT_HEADER_BYTES, listSegmentIds, segmentHeader, segmentPath } from "../../src/log/segment-files.js";
import { captureLogger, type LogEvent } from "../helpers/capture-logger.js";
import { all } from "../helpers/collect.js";

const BODY_MAX = 8192;
const LIMITS = { recordBytesMax: BODY_MAX, chunkBytes: 1024, headersBytesMax: 1024 };
const enc = (s: string) => new TextEncoder().encode(s);

/** A forged frame: what an attacker would store as a value, hoping it is replayed as a record. */
const FORGED = frame(encodeRecord({ t: "sset", loc: "victim", seq: 1, rev: 1, ts: 1, value: enc("forged"), size: 6 }));

let dir: string;
const warnings: string[] = [];
const events: LogEvent[] = [];
const logger = captureLogger({ warnings, events }).logger;
const open = (extra: Partial<StoreOptions> = {}) => Store.open({ dir, limits: LIMITS, sweepTimers: false, logger, ...extra });

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "strata-damage-"));
  warnings.length = 0;
  events.length = 0;
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Walks a segment as recovery does: records kept (by offset), damaged ranges, and where it ends. */
function walk(buf: Buffer): { kept: number[]; damaged: Array<[number, number]>; tornAt?: number } {
  const kept: number[] = [];
  const damaged: Array<[number, number]> = [];
  let off = SEGMENT_HEADER_BYTES;
  while (off < buf.byteLength) {
    if (validFrameAt(buf, off, BODY_MAX)) {
      kept.push(off);
      off = (parseFrame(buf, off, BODY_MAX) as { next: number }).next;
      continue;
    }
    const next = resync(buf, off, BODY_MAX);
    if (next === undefined) return { kept, damaged, tornAt: off };
    damaged.push([off, next]);
    off = next;
  }
  return { kept, damaged };
}

/** A small segment: records of varied sizes, one of them holding a forged frame as its value. */
function smallSegment(): { buf: Buffer; offs: number[] } {
  const recs: LogRecord[] = [
    { t: "sset", loc: "s", seq: 1, rev: 1, ts: 5, value: enc("a"), size: 1 },
    { t: "sset", loc: "s", seq: 2, rev: 2, ts: 5, value: FORGED, size: FORGED.byteLength },
    { t: "kset", loc: "k", key: "x", rev: 1, ts: 5, value: enc("value of x"), size: 10 },
    { t: "sset", loc: "s", seq: 3, rev: 3, ts: 5, value: new Uint8Array(64), size: 64 },
    { t: "sdel", loc: "s", seq: 1, rev: 4, ts: 6 },
    { t: "sset", loc: "s", seq: 4, rev: 5, ts: 7, value: enc("last"), size: 4 },
  ];
  const parts = [segmentHeader(1)];
  const offs: number[] = [];
  let at = SEGMENT_HEADER_BYTES;
  for (const r of recs) {
    const f = frame(encodeRecord(r));
    offs.push(at);
    parts.push(f);
    at += f.byteLength;
  }
  return { buf: Buffer.concat(parts), offs };
}

/** Which record (index into offs) holds byte `i`. */
const holder = (offs: number[], i: number) => offs.filter((o) => o <= i).length - 1;

describe("resync (pure)", () => {
  const { buf, offs } = smallSegment();

  it("keeps every record but the damaged one, for every flip of every byte", () => {
    for (let i = SEGMENT_HEADER_BYTES; i < buf.byteLength; i++) {
      for (const mask of [0x01, 0x80, 0xff, 0x10]) {
        const b = Buffer.from(buf);
        b[i]! ^= mask;
        const r = walk(b);
        const hit = holder(offs, i);
        const ctx = `byte ${i} ^ ${mask} (record ${hit})`;
        expect(r.kept, ctx).toEqual(offs.filter((_, k) => k !== hit));
        if (hit === offs.length - 1) {
          expect(r.tornAt, ctx).toBe(offs[hit]); // nothing valid follows: a torn tail
          expect(r.damaged, ctx).toEqual([]);
        } else {
          expect(r.damaged, ctx).toEqual([[offs[hit], offs[hit + 1]]]);
          expect(r.tornAt, ctx).toBeUndefined();
        }
      }
    }
  });

  it("cuts at the first incomplete record for every truncation, and never finds a record past it", () => {
    for (let t = SEGMENT_HEADER_BYTES; t <= buf.byteLength; t++) {
      const r = walk(buf.subarray(0, t));
      const whole = offs.filter((o, k) => (offs[k + 1] ?? buf.byteLength) <= t);
      expect(r.kept, `truncated at ${t}`).toEqual(whole);
      expect(r.damaged, `truncated at ${t}`).toEqual([]);
      expect(r.tornAt, `truncated at ${t}`).toBe(offs.includes(t) || t === buf.byteLength ? undefined : offs[whole.length]);
    }
  });

  it("never turns a forged frame inside a value into a record, whatever byte of its record is damaged", () => {
    const attacker = 1;
    const forgedAt = buf.indexOf(FORGED);
    expect(forgedAt).toBeGreaterThan(offs[attacker]!);
    expect(validFrameAt(buf, forgedAt, BODY_MAX)).toBe(true); // it would decode, were it trusted
    for (let i = offs[attacker]!; i < offs[attacker + 1]!; i++) {
      for (const mask of [0x01, 0x40, 0xff]) {
        const b = Buffer.from(buf);
        b[i]! ^= mask;
        expect(walk(b).kept, `byte ${i} ^ ${mask}`).not.toContain(forgedAt);
      }
    }
  });

  it("rejects a run of zero bytes quickly and finds the record after it", () => {
    const zeros = Buffer.alloc(1024 * 1024);
    const tail = frame(encodeRecord({ t: "sdel", loc: "s", seq: 9, rev: 9, ts: 9 }));
    const b = Buffer.concat([segmentHeader(1), zeros, tail]);
    const started = performance.now();
    expect(resync(b, SEGMENT_HEADER_BYTES, BODY_MAX)).toBe(SEGMENT_HEADER_BYTES + zeros.byteLength);
    expect(resync(Buffer.concat([segmentHeader(1), zeros]), SEGMENT_HEADER_BYTES, BODY_MAX)).toBeUndefined();
    expect(performance.now() - started).toBeLessThan(2000);
    expect(decodeRecord(parseFrame(b, SEGMENT_HEADER_BYTES + zeros.byteLength, BODY_MAX).kind === "ok" ? (parseFrame(b, SEGMENT_HEADER_BYTES + zeros.byteLength, BODY_MAX) as { body: Buffer }).body : Buffer.alloc(0))).toMatchObject({ t: "sdel", seq: 9 });
  });
});

describe("recovery of a damaged last segment", () => {
  /** Writes the records of smallSegment's kind through a store; returns the last segment's file and record offsets. */
  async function writeSmall(): Promise<{ file: string; original: Buffer; offs: number[] }> {
    const store = await open();
    const offs: number[] = [];
    const values = [enc("a"), FORGED, new Uint8Array(64).fill(7), enc("last one")];
    for (const value of values) {
      await store.stream("s").append({ value });
      const meta = store.index.locs.get("s")!;
      offs.push(store.index.seqs.get([meta.id, meta.lastSeq])![1]);
    }
    await store.close();
    const ids = listSegmentIds(path.join(dir, "segments"));
    const file = segmentPath(path.join(dir, "segments"), ids[ids.length - 1]!);
    return { file, original: fs.readFileSync(file), offs };
  }

  async function reopenFromLog(): Promise<{ seqs: number[]; victim: number; report: Store["recovery"] }> {
    fs.rmSync(path.join(dir, "index"), { recursive: true, force: true });
    const store = await open();
    try {
      const seqs = (await all(store.stream("s").getAll())).map((m) => m.seq);
      return { seqs, victim: store.inventory("victim").count, report: store.recovery };
    } finally {
      await store.close();
    }
  }

  /**
   * Offsets worth damaging in the engine (each costs a reopen; `resync` itself is tested on every
   * byte above): every header byte of every record, and the first, middle and last body bytes.
   */
  const samples = (offs: number[], size: number) =>
    offs.flatMap((o, k) => {
      const end = offs[k + 1] ?? size;
      return [...Array.from({ length: 8 }, (_, j) => o + j), o + 8, (o + 8 + end) >> 1, end - 1];
    });

  it("keeps every record after a flipped byte anywhere in the segment; cuts only a damaged last record", async () => {
    const { file, original, offs } = await writeSmall();
    for (const i of samples(offs, original.byteLength)) {
      const b = Buffer.from(original);
      b[i]! ^= 0x5a;
      fs.writeFileSync(file, b);
      const hit = holder(offs, i);
      const { seqs, victim, report } = await reopenFromLog();
      const ctx = `byte ${i} (record of seq ${hit + 1})`;
      expect(seqs, ctx).toEqual([1, 2, 3, 4].filter((s) => s !== hit + 1));
      expect(victim, ctx).toBe(0);
      if (hit === offs.length - 1) {
        expect(report.cut, ctx).toMatchObject({ off: offs[hit] });
        expect(report.damaged, ctx).toEqual([]);
      } else {
        expect(report.cut, ctx).toBeUndefined();
        expect(report.damaged, ctx).toEqual([expect.objectContaining({ off: offs[hit], bytes: offs[hit + 1]! - offs[hit]! })]);
        expect(fs.statSync(file).size, ctx).toBe(original.byteLength); // nothing was cut
      }
    }
  }, 60_000);

  it("after a truncation at any offset, keeps every whole record and cuts the rest", async () => {
    const { file, original, offs } = await writeSmall();
    for (const t of samples(offs, original.byteLength).filter((t) => t > SEGMENT_HEADER_BYTES)) {
      fs.writeFileSync(file, original.subarray(0, t));
      const { seqs, report } = await reopenFromLog();
      const whole = offs.filter((_, k) => (offs[k + 1] ?? original.byteLength) <= t).length;
      expect(seqs, `truncated at ${t}`).toEqual([1, 2, 3, 4].slice(0, whole));
      expect(report.damaged).toEqual([]);
    }
  }, 60_000);

  it("keeps 1,999 of 2,000 acknowledged messages after one flipped byte in the middle, on reopen and on reindex", async () => {
    const store = await open();
    const s = store.stream("chat");
    for (let i = 0; i < 2000; i += 200) {
      const res = await s.appendMany(Array.from({ length: 200 }, (_, k) => ({ message: { value: enc(`message ${i + k + 1}`) } })));
      expect(res.every((r) => r.ok)).toBe(true);
    }
    const meta = store.index.locs.get("chat")!;
    const [seg, off, len] = store.index.seqs.get([meta.id, 1000])!;
    expect(store.log.activeId).toBe(seg); // the last segment: where the tail used to be cut
    await store.close();
    const file = segmentPath(path.join(dir, "segments"), seg);
    const b = fs.readFileSync(file);
    b[off + len - 3]! ^= 0x01;
    fs.writeFileSync(file, b);

    const report = await Store.reindex({ dir, limits: LIMITS, logger });
    expect(report.damaged).toEqual([{ seg, off, bytes: len, reason: expect.stringContaining("checksum") }]);
    expect(report.cut).toBeUndefined();
    for (const rebuild of [false, true]) {
      if (rebuild) fs.rmSync(path.join(dir, "index"), { recursive: true });
      const reopened = await open();
      const seqs = (await all(reopened.stream("chat").getAll())).map((m) => m.seq);
      const extra = rebuild ? 1 : 0; // the message appended after the first reopen
      expect(reopened.inventory("chat").count).toBe(1999 + extra);
      expect(seqs).toHaveLength(1999 + extra);
      expect(seqs).not.toContain(1000);
      expect(seqs.at(-1)).toBe(2000 + extra);
      expect(await reopened.stream("chat").get(1000)).toBeUndefined();
      // The log goes on after the damage: a new write lands after the last valid record.
      const next = await reopened.stream("chat").append({ value: enc("after") });
      expect(next.seq).toBe(2001 + (rebuild ? 1 : 0));
      await reopened.close();
    }
    expect(warnings.some((w) => w.includes("CORRUPT") && w.includes(`offset ${off}`))).toBe(true);
    expect(events.find((e) => e.event === "segment_damaged" && e.offset === off)).toMatchObject({ level: 50, code: "CORRUPT", segment: seg, bytes: len });
  });
});

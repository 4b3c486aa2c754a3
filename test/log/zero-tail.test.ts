/**
 * Pre-zeroed segment files (src/log/segment-prepare.ts): appends overwrite zeros, a sealed
 * segment ends at its last record, and recovery reads a zero tail as the end of the log. What a
 * kill -9, a torn frame, a flipped bit in the tail, a lost rename, a full disk while preparing and
 * a crash at any point (fast-check, with power loss) do to it; and data directories from before
 * (segments without a zero tail) still open.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import fc from "fast-check";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { StoreOptions } from "../../src/config.js";
import { unsyncedMarkerPath } from "../../src/index/unsynced-marker.js";
import { recordsEnd, scanRecords } from "../../src/log/frame-scan.js";
import { frame } from "../../src/log/framing.js";
import { encodeRecord } from "../../src/log/record.js";
import { SEGMENT_HEADER_BYTES, listSegmentIds, preparedPath, segmentFileName, segmentHeader, segmentPath } from "../../src/log/segment-files.js";
import { Store } from "../../src/store.js";
import { FaultIo } from "../../src/testing/fault-io.js";
import { all } from "../helpers/collect.js";
import { CHILD_LIMITS } from "./zero-tail-child.js";

const KiB = 1024;
const T0 = 1_700_000_000_000;
const LIMITS = CHILD_LIMITS;
const CHILD = fileURLToPath(new URL("./zero-tail-child.ts", import.meta.url));

let dir: string;
let segs: string;
let store: Store | undefined;
const open = (extra: Partial<StoreOptions> = {}) => Store.open({ dir, sweepTimers: false, clock: () => T0, limits: LIMITS, ...extra });

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "strata-zerotail-"));
  segs = path.join(dir, "segments");
});
afterEach(async () => {
  await store?.close().catch(() => undefined);
  store = undefined;
  fs.rmSync(dir, { recursive: true, force: true });
});

const value = (n: number) => `v${n}-${"x".repeat((n * 37) % 900)}`;

async function values(s: Store, loc = "z/s"): Promise<string[]> {
  return (await all(s.stream(loc).getAll())).map((m) => Buffer.from(m.value!).toString());
}

/** Appends numbered values from `from` until `until` holds (bounded); returns the next number. */
async function appendUntil(s: Store, from: number, until: () => boolean, max = 5000): Promise<number> {
  let n = from;
  while (!until()) {
    if (n - from > max) throw new Error("condition never held");
    await s.stream("z/s").append({ value: Buffer.from(value(n++)) });
  }
  return n;
}

const fileSize = (id: number) => fs.statSync(segmentPath(segs, id)).size;
const read = (id: number) => fs.readFileSync(segmentPath(segs, id));
/** Whether segment `id` ends exactly at its last record (no zero tail). */
const endsAtLastRecord = (id: number) => recordsEnd(read(id), SEGMENT_HEADER_BYTES, LIMITS.recordBytesMax).end === fileSize(id);
const expected = (n: number) => Array.from({ length: n }, (_, i) => value(i));

/** A store whose active segment is a prepared one (at least one roll onto a pre-zeroed file), closed. */
async function writePreparedLog(): Promise<{ n: number; active: number; size: number }> {
  store = await open();
  const log = store.log;
  let n = await appendUntil(store, 0, () => log.activeId >= 3 && fileSize(log.activeId) > log.activeSize);
  n = await appendUntil(store, n, () => log.activeSize > SEGMENT_HEADER_BYTES + 4 * KiB);
  const result = { n, active: log.activeId, size: log.activeSize };
  await store.close();
  store = undefined;
  return result;
}

describe("scanning a zero tail", () => {
  const rec = frame(encodeRecord({ t: "chunk", data: new Uint8Array(40).fill(9) }));
  const withTail = (tail: Buffer) => Buffer.concat([segmentHeader(1), rec, tail]);

  it("ends at a zero tail without damage, and reports zeros as damage where they are not a tail", () => {
    const steps = [...scanRecords(withTail(Buffer.alloc(300)), SEGMENT_HEADER_BYTES, 1024, { zeroTailIsEnd: true })];
    expect(steps.map((s) => s.kind)).toEqual(["record"]);
    // Without the option (sealed segments) the same zeros are damage.
    expect([...scanRecords(withTail(Buffer.alloc(300)), SEGMENT_HEADER_BYTES, 1024)].map((s) => s.kind)).toEqual(["record", "damaged"]);
    // A torn frame then zeros: damage with nothing valid after it (recovery cuts it).
    const torn = Buffer.concat([rec.subarray(0, 20), Buffer.alloc(300)]);
    const t = [...scanRecords(withTail(torn), SEGMENT_HEADER_BYTES, 1024, { zeroTailIsEnd: true })];
    expect(t.map((s) => s.kind)).toEqual(["record", "damaged"]);
    expect(t[1]).toMatchObject({ kind: "damaged", next: undefined });
  });

  it("never takes a flipped bit anywhere in the zero tail for a record (every bit of a small tail)", () => {
    const tailBytes = 96;
    for (let bit = 0; bit < tailBytes * 8; bit++) {
      const tail = Buffer.alloc(tailBytes);
      tail[bit >> 3] = 1 << (bit & 7);
      const buf = withTail(tail);
      const steps = [...scanRecords(buf, SEGMENT_HEADER_BYTES, 1024, { zeroTailIsEnd: true })];
      expect(steps.filter((s) => s.kind === "record")).toHaveLength(1);
      expect(steps[1]).toMatchObject({ kind: "damaged", next: undefined });
      expect(recordsEnd(buf, SEGMENT_HEADER_BYTES, 1024)).toEqual({ end: buf.byteLength, zeroTail: false });
    }
  });
});

describe("pre-zeroed segments", () => {
  it("appends overwrite a prepared file, a sealed segment ends at its last record, and a reopen continues in the zero tail", async () => {
    store = await open();
    const log = store.log;
    const n = await appendUntil(store, 0, () => log.activeId >= 4 && fileSize(log.activeId) > log.activeSize);
    await log.settled();
    expect(log.prepareStats().prepared).toBeGreaterThanOrEqual(2);
    // The active file is a whole prepared segment: zeros after its records.
    expect(fileSize(log.activeId)).toBe(LIMITS.segmentBytesMax);
    expect(read(log.activeId).subarray(log.activeSize).every((b) => b === 0)).toBe(true);
    for (const id of listSegmentIds(segs).filter((id) => id < log.activeId)) expect(endsAtLastRecord(id), `segment ${id} is sealed`).toBe(true);
    const size = log.activeSize;
    await store.close();
    store = await open();
    expect(store.recovery.cut).toBeUndefined();
    expect(store.recovery.damaged).toEqual([]);
    expect(store.recovery.active).toMatchObject({ size });
    expect(await values(store)).toEqual(expected(n));
    await store.stream("z/s").append({ value: Buffer.from("after") });
    await store.close();
    store = await open();
    expect(await values(store)).toEqual([...expected(n), "after"]);
  });

  it("cuts a torn frame followed by zeros, as it cuts any torn tail", async () => {
    const { n, active, size } = await writePreparedLog();
    const fd = fs.openSync(segmentPath(segs, active), "r+");
    const torn = Buffer.alloc(8 + 100, 0xab);
    torn.writeUInt32BE(500, 4); // promises 500 body bytes; 100 follow, then the zero tail
    fs.writeSync(fd, torn, 0, torn.byteLength, size);
    fs.closeSync(fd);
    store = await open();
    expect(store.recovery.cut).toMatchObject({ seg: active, off: size });
    expect(await values(store)).toEqual(expected(n));
    await store.stream("z/s").append({ value: Buffer.from("after") });
    await store.close();
    store = await open();
    expect(await values(store)).toEqual([...expected(n), "after"]);
  });

  it("does not take a flipped bit in the zero tail for a record: the tail is cut, the records kept", async () => {
    const { n, active, size } = await writePreparedLog();
    const fd = fs.openSync(segmentPath(segs, active), "r+");
    fs.writeSync(fd, Buffer.from([0x10]), 0, 1, size + 3000);
    fs.closeSync(fd);
    store = await open();
    expect(store.recovery.cut).toMatchObject({ seg: active, off: size });
    expect(store.recovery.damaged).toEqual([]);
    expect(await values(store)).toEqual(expected(n));
    await store.stream("z/s").append({ value: Buffer.from("after") });
    await store.close();
    store = await open();
    expect(await values(store)).toEqual([...expected(n), "after"]);
  });

  it("after a crash between a roll and its seal: puts back a prepared file whose rename was lost, cuts the zero tail left before it", async () => {
    const { n, active } = await writePreparedLog();
    const before = active - 1;
    const sealedSize = fileSize(before);
    // As if the crash came before the seal (zero tail still there) and lost the rename.
    fs.truncateSync(segmentPath(segs, before), LIMITS.segmentBytesMax);
    fs.renameSync(segmentPath(segs, active), preparedPath(segs));
    store = await open();
    expect(fs.existsSync(preparedPath(segs))).toBe(false);
    expect(fileSize(before)).toBe(sealedSize);
    expect(store.recovery.active?.id).toBe(active);
    expect(store.recovery.damaged).toEqual([]);
    expect(await values(store)).toEqual(expected(n));
  });

  it("removes a prepared file that holds a header but no record; keeps a zeroed one for use", async () => {
    const { n, active } = await writePreparedLog();
    fs.writeFileSync(preparedPath(segs), Buffer.concat([segmentHeader(active + 1), Buffer.alloc(LIMITS.segmentBytesMax - SEGMENT_HEADER_BYTES)]));
    store = await open();
    expect(fs.existsSync(preparedPath(segs))).toBe(false);
    expect(store.log.prepareStats().ready).toBe(false);
    expect(await values(store)).toEqual(expected(n));
    await store.close();
    fs.writeFileSync(preparedPath(segs), Buffer.alloc(LIMITS.segmentBytesMax));
    store = await open();
    expect(store.log.prepareStats().ready).toBe(true);
    expect(listSegmentIds(segs).at(-1)).toBe(active);
  });

  it("leaves a new store's plain first segment for a prepared one once it holds segmentPreparePlainAtBytes, long before segmentPrepareAtBytes", async () => {
    const plainAt = 4 * KiB;
    store = await open({ limits: { ...LIMITS, segmentPrepareAtBytes: LIMITS.segmentBytesMax, segmentPreparePlainAtBytes: plainAt } });
    const log = store.log;
    expect(fileSize(1)).toBe(log.activeSize); // plain: no zeros ahead
    // Below the threshold nothing is prepared.
    let n = await appendUntil(store, 0, () => log.activeSize - SEGMENT_HEADER_BYTES + 1000 >= plainAt);
    expect(log.activeSize - SEGMENT_HEADER_BYTES).toBeLessThan(plainAt);
    await log.settled();
    expect(log.prepareStats().prepared).toBe(0);
    // Past it, the next file is prepared and appends move to it, far below segmentPrepareAtBytes.
    n = await appendUntil(store, n, () => log.activeId > 1);
    expect(endsAtLastRecord(1)).toBe(true);
    expect(fileSize(1)).toBeLessThan(LIMITS.segmentBytesMax / 4);
    expect(fileSize(log.activeId)).toBe(LIMITS.segmentBytesMax);
    expect(read(log.activeId).subarray(log.activeSize).every((b) => b === 0)).toBe(true);
    await store.close();
    store = await open();
    expect(await values(store)).toEqual(expected(n));
  });

  it("makes plain segments, nothing zeroed, while each fdatasync covers more than segmentPrepareSyncBytesMax; prepares again at one record per sync", async () => {
    const syncBytesMax = 4 * KiB;
    store = await open({ limits: { ...LIMITS, segmentPrepareSyncBytesMax: syncBytesMax } });
    const log = store.log;
    // Batches of 16 records, one fdatasync each: ~7 KiB per sync, past the limit.
    let n = 0;
    const batch = async () => {
      const items = Array.from({ length: 16 }, () => ({ message: { value: Buffer.from(value(n++)) } }));
      for (const r of await store!.stream("z/s").appendMany(items)) expect(r.ok).toBe(true);
    };
    while (log.activeId < 4) await batch();
    await log.settled();
    expect(log.prepareStats().prepared).toBe(0);
    expect(fs.existsSync(preparedPath(segs))).toBe(false);
    for (const id of listSegmentIds(segs)) expect(endsAtLastRecord(id) || id === log.activeId).toBe(true);
    expect(fileSize(log.activeId)).toBe(log.activeSize); // plain: no zeros ahead
    await store.close();
    store = await open({ limits: { ...LIMITS, segmentPrepareSyncBytesMax: syncBytesMax } });
    expect(await values(store)).toEqual(expected(n));
    // One record per fdatasync (a new process: no history of large syncs): preparing pays again.
    n = await appendUntil(store, n, () => store!.log.prepareStats().prepared > 0 || fs.existsSync(preparedPath(segs)));
    await store.log.settled();
    expect(store.log.prepareStats().prepared).toBeGreaterThan(0);
    await store.close();
    store = await open();
    expect(await values(store)).toEqual(expected(n));
  });

  it("opens a data directory from before (segments without a zero tail) and goes on with prepared ones", async () => {
    // No preparation: every segment is plain, as every version before wrote them.
    store = await open({ limits: { ...LIMITS, segmentPrepareAtBytes: LIMITS.segmentBytesMax, segmentPreparePlainAtBytes: LIMITS.segmentBytesMax } });
    let n = await appendUntil(store, 0, () => store!.log.activeId >= 3);
    expect(store.log.prepareStats().prepared).toBe(0);
    await store.close();
    for (const id of listSegmentIds(segs)) expect(endsAtLastRecord(id)).toBe(true);
    expect(fs.existsSync(preparedPath(segs))).toBe(false);
    store = await open();
    expect(await values(store)).toEqual(expected(n));
    const plain = store.log.activeId;
    // The plain active segment is left for a prepared one as soon as one is ready.
    n = await appendUntil(store, n, () => store!.log.activeId > plain && fileSize(store!.log.activeId) > store!.log.activeSize);
    await store.close();
    store = await open();
    expect(await values(store)).toEqual(expected(n));
  });
});

describe("a full disk while the next segment is prepared", () => {
  it("keeps taking appends that fit the active segment, and answers IO (no crash) when a roll needs the file that could not be made", async () => {
    let full = (p: string) => p.includes("prepared");
    const io = new FaultIo({ seed: 3, match: (p) => full(p) });
    io.failRate("write", 1);
    store = await open({ io });
    const log = store.log;
    // Appends that fit segment 1 all succeed although every preparation fails.
    let n = await appendUntil(store, 0, () => log.activeSize > LIMITS.segmentBytesMax / 2);
    await log.settled();
    expect(log.prepareStats()).toMatchObject({ failures: 1, ready: false });
    expect(log.activeId).toBe(1);
    // Now the disk is full for every file but the active one (overwrites of its blocks need no
    // space): appends go on until one needs a new segment, which gets IO.
    const activeName = segmentFileName(log.activeId);
    full = (p) => !p.endsWith(activeName);
    io.failRate("open", 1);
    let failed: unknown;
    while (failed === undefined) {
      if (n > 2000) throw new Error("no append ever needed a new segment");
      await store.stream("z/s").append({ value: Buffer.from(value(n)) }).then(
        () => n++,
        (err: unknown) => void (failed = err),
      );
    }
    expect(failed).toMatchObject({ code: "IO", retryable: true });
    expect(await values(store)).toEqual(expected(n));
    // The disk has space again: appends work without a restart, and a restart shows exactly what was acknowledged.
    io.clear();
    full = () => false;
    await store.stream("z/s").append({ value: Buffer.from("after") });
    await store.close();
    store = await open();
    expect(await values(store)).toEqual([...expected(n), "after"]);
  });
});

describe("kill -9", () => {
  it("keeps every acknowledged append of a log killed while it appends into a pre-zeroed segment", async () => {
    const child = spawn(process.execPath, ["--import", "tsx", CHILD, dir], { stdio: ["ignore", "pipe", "pipe"] });
    let acked = -1;
    let preparedAt: number | undefined;
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const exit = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.on("exit", (code, signal) => resolve({ code, signal })));
    let pending = "";
    child.stdout.on("data", (d: Buffer) => {
      pending += d.toString();
      const lines = pending.split("\n");
      pending = lines.pop()!;
      for (const line of lines) {
        if (line === "prepared") preparedAt = acked;
        else if (line.startsWith("ack ")) acked = Number(line.slice(4));
        if (preparedAt !== undefined && acked >= preparedAt + 40 && child.exitCode === null && !child.killed) child.kill("SIGKILL");
      }
    });
    expect(await exit, stderr).toEqual({ code: null, signal: "SIGKILL" });
    store = await open();
    const got = await values(store);
    expect(got.length).toBeGreaterThanOrEqual(acked + 1);
    expect(got.slice(0, acked + 1)).toEqual(expected(acked + 1).map((_, i) => `v${i}-${"x".repeat(i % 700)}`));
    // The active segment is still the pre-zeroed file: zeros after the records recovery found.
    const active = store.recovery.active!;
    expect(fileSize(active.id)).toBeGreaterThan(active.size);
    expect(read(active.id).subarray(active.size).every((b) => b === 0)).toBe(true);
  }, 60_000);
});

describe("the log invariant under a crash at any point (fast-check)", () => {
  it("reads back every acknowledged append, and nothing but a prefix of the appends issued", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 2 ** 31 - 1 }),
        fc.array(fc.array(fc.integer({ min: 0, max: 3000 }), { minLength: 1, maxLength: 6 }), { minLength: 2, maxLength: 14 }),
        fc.integer({ min: 0, max: 300 }),
        fc.option(fc.double({ min: 0, max: 1, noNaN: true }), { nil: undefined }),
        async (seed, groups, crashAfter, keep) => {
          const d = fs.mkdtempSync(path.join(os.tmpdir(), "strata-zerotail-prop-"));
          const io = new FaultIo({ seed });
          const issued: string[] = [];
          const acked = new Set<string>();
          try {
            const limits = { ...LIMITS, segmentBytesMax: 32 * KiB, segmentPrepareAtBytes: 2 * KiB, segmentPrepareWriteBytes: 4 * KiB };
            const s = await Store.open({ dir: d, io, limits, sweepTimers: false, clock: () => T0 });
            io.crashAfter(crashAfter);
            for (const sizes of groups) {
              if (io.crashed) break;
              const vs = sizes.map((size) => `${issued.length}:${"y".repeat(size)}`.slice(0, Math.max(size, String(issued.length).length + 1)));
              const batch = vs.map((v, i) => `${issued.length + i}|${v}`);
              issued.push(...batch);
              await Promise.all(batch.map((v) => s.stream("p/s").append({ value: Buffer.from(v) }).then(() => void acked.add(v), () => undefined)));
            }
            io.crashed = true;
            await s.close().catch(async () => void (await s.index.close().catch(() => undefined)));
            if (keep !== undefined) {
              io.powerLoss(keep);
              // The index was never fsync'd either: mark it as from another boot, so it is rebuilt from the log.
              fs.writeFileSync(unsyncedMarkerPath(path.join(d, "index")), JSON.stringify({ bootId: "before-the-power-cut" }));
            }
            const again = await Store.open({ dir: d, limits, sweepTimers: false, clock: () => T0 });
            try {
              const got = (await all(again.stream("p/s").getAll())).map((m) => Buffer.from(m.value!).toString());
              expect(got).toEqual(issued.slice(0, got.length));
              for (const v of acked) expect(got).toContain(v);
            } finally {
              await again.close();
            }
          } finally {
            fs.rmSync(d, { recursive: true, force: true });
          }
        },
      ),
      { numRuns: 30 },
    );
  }, 120_000);
});

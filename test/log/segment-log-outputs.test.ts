/**
 * The segment log's repair after a failed write (src/log/segment-log.ts) removes the segments a
 * failed batch may have started after the active one, but never a compaction output: outputs have
 * ids from 2^31 on, above every normal segment, and are not part of the append order.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, expect, it } from "vitest";
import { segmentHeader, segmentPath } from "../../src/log/segment-files.js";
import { COMPACTED_SEG_BASE } from "../../src/log/segment-set.js";
import { Store } from "../../src/store.js";
import { FaultIo } from "../../src/testing/fault-io.js";

const dirs: string[] = [];
afterEach(() => dirs.splice(0).forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

it("a failed fsync's repair keeps compaction output files", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "strata-seglog-out-"));
  dirs.push(dir);
  const io = new FaultIo({ seed: 3 });
  const store = await Store.open({ dir, sweepTimers: false, io });
  try {
    await store.stream("s").append({ value: new Uint8Array([1]) });
    const out = segmentPath(path.join(dir, "segments"), COMPACTED_SEG_BASE);
    fs.writeFileSync(out, segmentHeader(COMPACTED_SEG_BASE));
    io.failNext("fsync", 1, "EIO");
    await expect(store.stream("s").append({ value: new Uint8Array([2]) })).rejects.toMatchObject({ code: "IO" });
    expect(await store.stream("s").append({ value: new Uint8Array([3]) })).toMatchObject({ seq: 2 });
    expect(fs.existsSync(out)).toBe(true);
  } finally {
    await store.close();
  }
});

/**
 * The chunk records of a large value whose set record is never written are counted dead at once
 * (src/index/dead-chunks.ts), not only at the next open: a refused write (CONFLICT), a repeated
 * msgId answered with the original, and a value whose chunk writes fail part way (disk full).
 * A value that is written leaves none of its chunks dead.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { deadBytesBySegment } from "../../src/index/dead-chunks.js";
import { Store } from "../../src/store.js";
import { nodeFileIo, type FileIo } from "../../src/log/file-io.js";

const LIMITS = { chunkBytes: 1024, recordBytesMax: 8192, headersBytesMax: 1024, segmentBytesMax: 1 << 20 };
const big = (fill: number) => new Uint8Array(5000).fill(fill);
const deadTotal = (store: Store) => [...deadBytesBySegment(store.index).values()].reduce((a, b) => a + b, 0);

let dir: string;
beforeAll(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), "strata-dead-chunks-"))));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe("chunks of a large value that is not written", () => {
  it("are dead at once after a refusal or a repeated msgId, and none after a written value", async () => {
    const store = await Store.open({ dir: path.join(dir, "a"), limits: LIMITS, sweepTimers: false });
    try {
      await store.kv("k/v").set("x", big(1));
      await store.stream("s/a").append({ value: big(2) }, { msgId: "m" });
      expect(deadTotal(store)).toBe(0);

      const refused = await store.kv("k/v").set("x", big(3), { expectedRevision: 0 }).catch((e: unknown) => e);
      expect(StrataError.is(refused, "CONFLICT")).toBe(true);
      const afterRefusal = deadTotal(store);
      expect(afterRefusal).toBeGreaterThanOrEqual(5000);

      const repeat = await store.stream("s/a").append({ value: big(4) }, { msgId: "m" });
      expect(repeat.seq).toBe(1);
      expect(deadTotal(store)).toBeGreaterThanOrEqual(afterRefusal + 5000);
      expect(Buffer.from((await store.kv("k/v").get("x"))!.value).equals(Buffer.from(big(1)))).toBe(true);
    } finally {
      await store.close();
    }
  });

  it("are dead at once when the disk fails part way through writing them", async () => {
    // One record per batch, so each chunk is its own log write; the fourth write of the store
    // (the third chunk) fails as on a full disk, the others succeed.
    let writes = 0;
    const io: FileIo = {
      ...nodeFileIo,
      writeSync: (fd, buf, offset, length, position) => {
        if (++writes === 4) throw Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
        return nodeFileIo.writeSync(fd, buf, offset, length, position);
      },
      // The log writes a batch's frames with one writev.
      writevSync: (fd, bufs, position) => {
        if (++writes === 4) throw Object.assign(new Error("ENOSPC: no space left on device, writev"), { code: "ENOSPC" });
        return nodeFileIo.writevSync(fd, bufs, position);
      },
    };
    const store = await Store.open({ dir: path.join(dir, "b"), limits: { ...LIMITS, commitBatchMax: 1 }, sweepTimers: false, io });
    try {
      await store.stream("s/b").append({ value: new Uint8Array(10) });
      const failed = await store.stream("s/b").append({ value: big(5) }).catch((e: unknown) => e);
      expect(StrataError.is(failed, "IO")).toBe(true);
      expect(writes).toBeGreaterThan(4);
      // The chunks written around the failed one (more than three of them) will never be referenced.
      expect(deadTotal(store)).toBeGreaterThan(3 * 1024);
      expect(store.index.openChunks.getCount()).toBe(0);
    } finally {
      await store.close();
    }
  });
});

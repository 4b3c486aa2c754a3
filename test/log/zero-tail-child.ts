/**
 * The victim of the zero-tail kill test (zero-tail.test.ts): opens a Store on argv[2] with small
 * segments prepared early, appends numbered values to one stream one at a time, and prints
 * "ack <n>" after each acknowledgement, and "prepared" once the active segment is a pre-zeroed
 * file (its file is longer than its records). The parent kills it with SIGKILL.
 * Writes to stdout are synchronous for pipes on Linux, so a printed line is never lost.
 */
import fs from "node:fs";
import path from "node:path";
import { segmentPath } from "../../src/log/segment-files.js";
import { Store } from "../../src/store.js";

export const CHILD_LIMITS = { chunkBytes: 8 * 1024, recordBytesMax: 16 * 1024, headersBytesMax: 2048, segmentBytesMax: 128 * 1024, segmentPrepareAtBytes: 8 * 1024, segmentPrepareWriteBytes: 16 * 1024 };

async function main(): Promise<void> {
  const dir = process.argv[2]!;
  const store = await Store.open({ dir, limits: CHILD_LIMITS, sweepTimers: false });
  const s = store.stream("z/s");
  let said = false;
  for (let n = 0; ; n++) {
    await s.append({ value: Buffer.from(`v${n}-${"x".repeat(n % 700)}`) });
    process.stdout.write(`ack ${n}\n`);
    if (!said && fs.statSync(segmentPath(path.join(dir, "segments"), store.log.activeId)).size > store.log.activeSize) {
      said = true;
      process.stdout.write("prepared\n");
    }
  }
}

if (process.argv[1]?.endsWith("zero-tail-child.ts")) {
  main().catch((err) => {
    process.stderr.write(`zero-tail-child failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}

/**
 * What an fdatasync costs on the disk under a directory, measured the two ways a log can write:
 * - `append`: each write lands past the end of the file, so the fdatasync must also commit the
 *   new file size (and any new extent) through the file system's journal (ext4: jbd2), and waits
 *   behind whatever else is journalling on that file system;
 * - `overwrite`: each write lands on a block that was written with real zeros and made durable
 *   beforehand (a pre-zeroed segment file), so the fdatasync has only data to flush.
 * The two are interleaved one for one in one run, so a noisy neighbour hits both alike. Used by the
 * net bench (one row, on the disk of the strata data directory) and by the 1-in-flight targets
 * ("p50 <= echo p50 + fdatasync p50 + 0.1 ms" takes `overwrite.p50`, the cost Strata's log pays).
 * The files live in a scratch directory under `dir` that is always removed.
 */
import fs from "node:fs";
import { promisify } from "node:util";
import { withTempDir } from "./fs.js";
import { latencyHistogram, recordMs } from "./stats.js";

const fdatasyncAsync = promisify(fs.fdatasync);

export interface FdatasyncOptions {
  /** fdatasyncs of each kind (default 500). */
  count?: number;
  /** Bytes written before each fdatasync (default 1 KiB). */
  writeBytes?: number;
  /** Through the thread pool as the log does (default), or `fdatasyncSync` (the bare syscall). */
  async?: boolean;
}

/** Latencies in microseconds. */
export interface FdatasyncLatency {
  count: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
  unit: "us";
}

export interface FdatasyncResult {
  append: FdatasyncLatency;
  overwrite: FdatasyncLatency;
  writeBytes: number;
  async: boolean;
}

/** Measures both kinds, interleaved; see the file comment. */
export async function measureFdatasync(dir: string, opts: FdatasyncOptions = {}): Promise<FdatasyncResult> {
  const count = opts.count ?? 500;
  const writeBytes = opts.writeBytes ?? 1024;
  const useAsync = opts.async ?? true;
  return withTempDir("fdatasync", dir, async (scratch) => {
    const data = Buffer.alloc(writeBytes, 0xa5);
    const appendFd = fs.openSync(`${scratch}/append`, "w+");
    const overwriteFd = fs.openSync(`${scratch}/overwrite`, "w+");
    try {
      // The overwrite file: real zeros over every block it will take, made durable with its size.
      const zeros = Buffer.alloc(1 << 20);
      const total = count * writeBytes;
      for (let off = 0; off < total; off += zeros.byteLength) fs.writeSync(overwriteFd, zeros, 0, Math.min(zeros.byteLength, total - off), off);
      fs.fsyncSync(overwriteFd);
      const hAppend = latencyHistogram();
      const hOverwrite = latencyHistogram();
      const sync = async (fd: number): Promise<number> => {
        const t0 = performance.now();
        if (useAsync) await fdatasyncAsync(fd);
        else fs.fdatasyncSync(fd);
        return performance.now() - t0;
      };
      for (let i = 0; i < count; i++) {
        const off = i * writeBytes;
        fs.writeSync(appendFd, data, 0, writeBytes, off);
        recordMs(hAppend, await sync(appendFd));
        fs.writeSync(overwriteFd, data, 0, writeBytes, off);
        recordMs(hOverwrite, await sync(overwriteFd));
      }
      const summary = (h: ReturnType<typeof latencyHistogram>): FdatasyncLatency => ({
        count,
        p50: h.getValueAtPercentile(50),
        p99: h.getValueAtPercentile(99),
        p999: h.getValueAtPercentile(99.9),
        max: h.maxValue,
        unit: "us",
      });
      return { append: summary(hAppend), overwrite: summary(hOverwrite), writeBytes, async: useAsync };
    } finally {
      fs.closeSync(appendFd);
      fs.closeSync(overwriteFd);
    }
  });
}

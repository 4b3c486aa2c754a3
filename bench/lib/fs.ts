/**
 * Files for benchmarks: scratch directories that are always removed, and the space a directory
 * really takes on disk (allocated blocks, so sparse files and preallocation are counted as the
 * file system counts them, not by their apparent size).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

/** Creates a fresh directory under `parent` (default: the OS temp dir). */
export function makeTempDir(prefix: string, parent?: string): string {
  const base = parent ?? os.tmpdir();
  fs.mkdirSync(base, { recursive: true });
  return fs.mkdtempSync(path.join(base, `${prefix}-`));
}

export function removeDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}

/** Runs `fn` with a fresh scratch directory and removes it afterwards, even on failure. */
export async function withTempDir<T>(prefix: string, parent: string | undefined, fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = makeTempDir(prefix, parent);
  try {
    return await fn(dir);
  } finally {
    removeDir(dir);
  }
}

export interface DiskUsage {
  /** Sum of st_blocks * 512 of every file and directory under the root (the root included). */
  allocatedBytes: number;
  /** Sum of the files' apparent sizes (st_size). */
  apparentBytes: number;
  files: number;
}

/** What everything under `root` occupies on disk. Symbolic links are not followed. */
export function diskUsage(root: string): DiskUsage {
  const usage: DiskUsage = { allocatedBytes: 0, apparentBytes: 0, files: 0 };
  const visit = (p: string): void => {
    const st = fs.lstatSync(p);
    usage.allocatedBytes += st.blocks * 512;
    if (st.isDirectory()) {
      for (const name of fs.readdirSync(p)) visit(path.join(p, name));
    } else if (st.isFile()) {
      usage.apparentBytes += st.size;
      usage.files += 1;
    }
  };
  visit(root);
  return usage;
}

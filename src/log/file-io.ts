/**
 * The file-I/O seam of the segment log: every file-system call the log's append and read paths
 * make goes through a `FileIo`, so a test can put a fault-injecting one in front of the disk
 * (src/testing/fault-io.ts) and produce ENOSPC, EIO or torn writes that a real disk produces only
 * rarely. `nodeFileIo` is the real one, a thin pass-through to `node:fs`.
 *
 * Contract (the same as node:fs): a failing call throws a `NodeJS.ErrnoException` with `code`;
 * `writeSync`/`write` may write fewer bytes than asked and return how many; `readSync` returns 0
 * at end of file. Nothing here buffers or retries; callers decide what a failure means.
 */
import fs from "node:fs";
import { promisify } from "node:util";

export interface FileIo {
  openSync(path: string, flags: string): number;
  closeSync(fd: number): void;
  readSync(fd: number, buf: Uint8Array, offset: number, length: number, position: number): number;
  writeSync(fd: number, buf: Uint8Array, offset: number, length: number, position: number): number;
  /** Like `writeSync`, off the event loop; resolves to the number of bytes written. */
  write(fd: number, buf: Uint8Array, offset: number, length: number, position: number): Promise<number>;
  /** Writes `bufs` back to back from `position` (writev); may write fewer bytes, returns how many. */
  writevSync(fd: number, bufs: readonly Uint8Array[], position: number): number;
  /** Like `writevSync`, off the event loop. */
  writev(fd: number, bufs: readonly Uint8Array[], position: number): Promise<number>;
  fdatasync(fd: number): Promise<void>;
  /** Like `fdatasync`, on the event loop (a lone write's, where a thread-pool trip costs more). */
  fdatasyncSync(fd: number): void;
  fsyncSync(fd: number): void;
  ftruncateSync(fd: number, length: number): void;
  fstatSync(fd: number): { size: number };
  renameSync(from: string, to: string): void;
  // Off the event loop (the thread pool), for work done in the background beside the appends:
  // preparing the next segment, sealing the last one.
  open(path: string, flags: string): Promise<number>;
  close(fd: number): Promise<void>;
  fsync(fd: number): Promise<void>;
  ftruncate(fd: number, length: number): Promise<void>;
  rename(from: string, to: string): Promise<void>;
}

const writeAsync = promisify(fs.write);
const writevAsync = promisify(fs.writev);
const fdatasyncAsync = promisify(fs.fdatasync);
const openAsync = promisify(fs.open) as (path: string, flags: string) => Promise<number>;
const closeAsync = promisify(fs.close);
const fsyncAsync = promisify(fs.fsync);
const ftruncateAsync = promisify(fs.ftruncate) as (fd: number, length: number) => Promise<void>;

export const nodeFileIo: FileIo = {
  openSync: (path, flags) => fs.openSync(path, flags),
  closeSync: (fd) => fs.closeSync(fd),
  readSync: (fd, buf, offset, length, position) => fs.readSync(fd, buf, offset, length, position),
  writeSync: (fd, buf, offset, length, position) => fs.writeSync(fd, buf, offset, length, position),
  write: async (fd, buf, offset, length, position) => (await writeAsync(fd, buf, offset, length, position)).bytesWritten,
  fdatasync: (fd) => fdatasyncAsync(fd),
  fdatasyncSync: (fd) => fs.fdatasyncSync(fd),
  fsyncSync: (fd) => fs.fsyncSync(fd),
  ftruncateSync: (fd, length) => fs.ftruncateSync(fd, length),
  fstatSync: (fd) => ({ size: fs.fstatSync(fd).size }),
  renameSync: (from, to) => fs.renameSync(from, to),
  writevSync: (fd, bufs, position) => fs.writevSync(fd, bufs as NodeJS.ArrayBufferView[], position),
  writev: async (fd, bufs, position) => (await writevAsync(fd, bufs as NodeJS.ArrayBufferView[], position)).bytesWritten,
  // Plain descriptors (not FileHandles, which close themselves when garbage collected).
  open: (path, flags) => openAsync(path, flags),
  close: (fd) => closeAsync(fd),
  fsync: (fd) => fsyncAsync(fd),
  ftruncate: (fd, length) => ftruncateAsync(fd, length),
  rename: (from, to) => fs.promises.rename(from, to),
};

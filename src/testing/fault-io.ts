/**
 * A fault-injecting `FileIo` (src/log/file-io.ts) for tests: wraps a real one and, from a seed,
 * fails writes, fsyncs, truncates or opens with ENOSPC or EIO, or tears a write (writes a prefix
 * of the buffer, then fails), the faults a full or failing disk produces. Pass it to
 * `Store.open({ dir, io })`.
 *
 * API (keep it small):
 * - `new FaultIo({ seed, base?, match? })`: `match(path)` limits faults to files whose path it
 *   accepts (default: every file opened through this FaultIo); calls on other files pass through.
 * - `failNext(op, count, code?)`: the next `count` calls of `op` fail with `code` (default ENOSPC).
 * - `failRate(op, probability, code?)`: from now on each call of `op` fails with that
 *   probability (1 = a disk that stays full; 0 turns it off).
 * - `tearNext(count, code?)`: the next `count` writes write a seeded-random strict prefix of their
 *   bytes (possibly none) and then fail with `code`.
 * - `clear()`: no more faults (the disk has space again). `injected` counts faults so far.
 * - `crashAfter(n)`: simulates the process (or machine) dying: after `n` more faultable calls, the
 *   next one fails (a write first writes a seeded strict prefix, as a write cut short by the
 *   crash), and so does every later call of any kind, on every file, reads included, until
 *   the store using it is abandoned. `clear()` does not revive it.
 * - `powerLoss(keep)`: after a crash, drops what was written but never fsync'd, as an OS crash or
 *   power cut does: of each file's bytes written since its last fsync (from the lowest offset
 *   written to the highest), a prefix of `keep` (0..1) survives; the rest is cut off where the
 *   file grew, and reads as zeros where it overwrote (a pre-zeroed segment: the disk still holds
 *   the zeros that were made durable there). The log writes in order, so a prefix is what survives.
 * Ops: "write" (writeSync, write, writevSync, writev), "fsync" (fdatasync, fdatasyncSync, fsyncSync, fsync),
 * "truncate" (ftruncateSync, ftruncate), "open" (openSync, open; not for reading), "rename".
 * The async calls (open, fsync, ftruncate, rename, close) are what the log's background work uses
 * (preparing the next segment, sealing the last one), so a full disk reaches that work too.
 *
 * Determinism: every faultable call draws exactly two values from a mulberry32 stream
 * (src/random.ts), whether or not it fails, so the fate of the n-th call depends only on the seed,
 * n and the faults armed; a failing seed replays.
 */
import fs from "node:fs";
import type { FileIo } from "../log/file-io.js";
import { nodeFileIo } from "../log/file-io.js";
import { mulberry32 } from "../random.js";

export type FaultCode = "ENOSPC" | "EIO";
export type FaultOp = "write" | "fsync" | "truncate" | "open" | "rename";

export interface FaultIoOptions {
  seed: number;
  base?: FileIo;
  match?: (path: string) => boolean;
}

const ERRNO: Record<FaultCode, number> = { ENOSPC: -28, EIO: -5 };

/** An error shaped like the one node:fs throws, so code under test cannot tell them apart. */
export function injectedError(code: FaultCode, syscall: string): NodeJS.ErrnoException {
  const message = code === "ENOSPC" ? "no space left on device" : "i/o error";
  return Object.assign(new Error(`${code}: ${message} (injected), ${syscall}`), { code, errno: ERRNO[code], syscall });
}

export class FaultIo implements FileIo {
  /** Number of faults injected so far. */
  injected = 0;
  private readonly base: FileIo;
  private readonly random: () => number;
  private readonly match: ((path: string) => boolean) | undefined;
  private readonly paths = new Map<number, string>();
  private readonly next = new Map<FaultOp, Array<{ code: FaultCode; tear: boolean }>>();
  private readonly rates = new Map<FaultOp, { p: number; code: FaultCode }>();
  /** Faultable calls left before the simulated crash; undefined while none is armed. */
  private crashIn: number | undefined;
  /** True once the simulated crash happened: every call fails. */
  crashed = false;
  /** Files written since their last fsync: their size then, and the range written since. */
  private readonly syncedSize = new Map<string, { size: number; from: number; to: number }>();

  constructor(opts: FaultIoOptions) {
    this.base = opts.base ?? nodeFileIo;
    this.random = mulberry32(opts.seed);
    this.match = opts.match;
  }

  failNext(op: FaultOp, count: number, code: FaultCode = "ENOSPC"): void {
    const q = this.next.get(op) ?? [];
    for (let i = 0; i < count; i++) q.push({ code, tear: false });
    this.next.set(op, q);
  }

  failRate(op: FaultOp, probability: number, code: FaultCode = "ENOSPC"): void {
    if (probability <= 0) this.rates.delete(op);
    else this.rates.set(op, { p: probability, code });
  }

  tearNext(count: number, code: FaultCode = "ENOSPC"): void {
    const q = this.next.get("write") ?? [];
    for (let i = 0; i < count; i++) q.push({ code, tear: true });
    this.next.set("write", q);
  }

  clear(): void {
    this.next.clear();
    this.rates.clear();
  }

  crashAfter(calls: number): void {
    this.crashIn = calls;
  }

  powerLoss(keep: number): void {
    for (const [file, u] of this.syncedSize) {
      let size: number;
      try {
        size = fs.statSync(file).size;
      } catch {
        continue; // removed since
      }
      const cut = u.from + Math.floor(keep * Math.max(0, u.to - u.from));
      const zeroEnd = Math.min(u.to, u.size, size);
      if (cut < zeroEnd) {
        const fd = fs.openSync(file, "r+");
        try {
          fs.writeSync(fd, Buffer.alloc(zeroEnd - cut), 0, zeroEnd - cut, cut);
        } finally {
          fs.closeSync(fd);
        }
      }
      if (size > Math.max(u.size, cut)) fs.truncateSync(file, Math.max(u.size, cut));
    }
    this.syncedSize.clear();
  }

  private checkAlive(syscall: string): void {
    if (this.crashed) throw injectedError("EIO", syscall);
  }

  /** Notes an fd about to take a write of `length` bytes at `position`, for `powerLoss`. */
  private noteUnsynced(fd: number, position: number, length: number): void {
    const file = this.paths.get(fd);
    if (file === undefined) return;
    const u = this.syncedSize.get(file);
    if (u === undefined) this.syncedSize.set(file, { size: this.base.fstatSync(fd).size, from: position, to: position + length });
    else {
      u.from = Math.min(u.from, position);
      u.to = Math.max(u.to, position + length);
    }
  }

  private noteSynced(fd: number): void {
    const file = this.paths.get(fd);
    if (file !== undefined) this.syncedSize.delete(file);
  }

  /** The fault for this call of `op` on `path`, if any; always draws two values. */
  private fate(op: FaultOp, path: string | undefined): { code: FaultCode; tear: boolean; cut: number } | undefined {
    const roll = this.random();
    const cut = this.random();
    if (this.crashIn !== undefined && !this.crashed) {
      if (this.crashIn <= 0) {
        this.crashed = true;
        this.injected++;
        return { code: "EIO", tear: op === "write", cut };
      }
      this.crashIn--;
    }
    if (this.crashed) return { code: "EIO", tear: false, cut };
    if (this.match !== undefined && (path === undefined || !this.match(path))) return undefined;
    const queued = this.next.get(op)?.shift();
    if (queued) {
      this.injected++;
      return { ...queued, cut };
    }
    const rate = this.rates.get(op);
    if (rate && roll < rate.p) {
      this.injected++;
      return { code: rate.code, tear: false, cut };
    }
    return undefined;
  }

  openSync(path: string, flags: string): number {
    this.checkAlive("open");
    const f = flags === "r" ? undefined : this.fate("open", path);
    if (f) throw injectedError(f.code, "open");
    const fd = this.base.openSync(path, flags);
    this.paths.set(fd, path);
    return fd;
  }

  closeSync(fd: number): void {
    this.paths.delete(fd);
    this.base.closeSync(fd);
  }

  readSync(fd: number, buf: Uint8Array, offset: number, length: number, position: number): number {
    this.checkAlive("read");
    return this.base.readSync(fd, buf, offset, length, position);
  }

  /** Applies a write's fate: a torn write writes a strict prefix first; either way it throws. */
  /** Draws the fate of a call that either fails whole or runs (syncs, truncates, renames): throws the fault, if any. */
  private fault(op: FaultOp, path: string | undefined, syscall: string): void {
    const f = this.fate(op, path);
    if (f) throw injectedError(f.code, syscall);
  }

  private faultWrite(fd: number, buf: Uint8Array, offset: number, length: number, position: number, syscall: string): void {
    const f = this.fate("write", this.paths.get(fd));
    this.noteUnsynced(fd, position, length);
    if (!f) return;
    if (f.tear) {
      const n = Math.floor(f.cut * length);
      if (n > 0) this.base.writeSync(fd, buf, offset, n, position);
    }
    throw injectedError(f.code, syscall);
  }

  writeSync(fd: number, buf: Uint8Array, offset: number, length: number, position: number): number {
    this.faultWrite(fd, buf, offset, length, position, "write");
    return this.base.writeSync(fd, buf, offset, length, position);
  }

  async write(fd: number, buf: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    this.faultWrite(fd, buf, offset, length, position, "write");
    return this.base.write(fd, buf, offset, length, position);
  }

  async fdatasync(fd: number): Promise<void> {
    this.fault("fsync", this.paths.get(fd), "fdatasync");
    await this.base.fdatasync(fd);
    this.noteSynced(fd);
  }

  fdatasyncSync(fd: number): void {
    this.fault("fsync", this.paths.get(fd), "fdatasync");
    this.base.fdatasyncSync(fd);
    this.noteSynced(fd);
  }

  fsyncSync(fd: number): void {
    this.fault("fsync", this.paths.get(fd), "fsync");
    this.base.fsyncSync(fd);
    this.noteSynced(fd);
  }

  ftruncateSync(fd: number, length: number): void {
    this.fault("truncate", this.paths.get(fd), "ftruncate");
    this.base.ftruncateSync(fd, length);
  }

  fstatSync(fd: number): { size: number } {
    this.checkAlive("fstat");
    return this.base.fstatSync(fd);
  }

  /** A writev's fate is that of one write of its bytes back to back (a tear keeps a prefix). */
  private faultWritev(fd: number, bufs: readonly Uint8Array[], position: number, syscall: string): void {
    const total = bufs.reduce((n, b) => n + b.byteLength, 0);
    const f = this.fate("write", this.paths.get(fd));
    this.noteUnsynced(fd, position, total);
    if (!f) return;
    if (f.tear) {
      const n = Math.floor(f.cut * total);
      if (n > 0) this.base.writeSync(fd, Buffer.concat(bufs, total), 0, n, position);
    }
    throw injectedError(f.code, syscall);
  }

  writevSync(fd: number, bufs: readonly Uint8Array[], position: number): number {
    this.faultWritev(fd, bufs, position, "writev");
    return this.base.writevSync(fd, bufs, position);
  }

  async writev(fd: number, bufs: readonly Uint8Array[], position: number): Promise<number> {
    this.faultWritev(fd, bufs, position, "writev");
    return this.base.writev(fd, bufs, position);
  }

  async open(path: string, flags: string): Promise<number> {
    this.checkAlive("open");
    const f = flags === "r" ? undefined : this.fate("open", path);
    if (f) throw injectedError(f.code, "open");
    const fd = await this.base.open(path, flags);
    this.paths.set(fd, path);
    return fd;
  }

  async close(fd: number): Promise<void> {
    this.paths.delete(fd);
    await this.base.close(fd);
  }

  async fsync(fd: number): Promise<void> {
    this.fault("fsync", this.paths.get(fd), "fsync");
    await this.base.fsync(fd);
    this.noteSynced(fd);
  }

  async ftruncate(fd: number, length: number): Promise<void> {
    this.fault("truncate", this.paths.get(fd), "ftruncate");
    await this.base.ftruncate(fd, length);
  }

  renameSync(from: string, to: string): void {
    this.fault("rename", from, "rename");
    this.base.renameSync(from, to);
    this.renamed(from, to);
  }

  async rename(from: string, to: string): Promise<void> {
    this.fault("rename", from, "rename");
    await this.base.rename(from, to);
    this.renamed(from, to);
  }

  private renamed(from: string, to: string): void {
    for (const [fd, p] of this.paths) if (p === from) this.paths.set(fd, to);
    const synced = this.syncedSize.get(from);
    if (synced !== undefined) {
      this.syncedSize.delete(from);
      this.syncedSize.set(to, synced);
    }
  }
}

/**
 * Sealing the segments the log rolled past (./segment-log.ts): each one's zero tail is cut and the
 * file fsync'd (./segment-create.ts `sealSegmentFile`), in the background and in roll order, and
 * only then is it announced (`onSealed`), so nothing trusts a segment's size before it ends at its
 * last record.
 *
 * Invariants:
 * - Announcements follow roll order; each segment is announced once, after its seal succeeded.
 * - A failed seal stays queued (its descriptor open); `sealAll`/`sealAllSync` (the next roll)
 *   redo it and throw while it fails, so at most the segment before the active one is unsealed.
 * - `close` never throws: what is left unsealed is cut by recovery at the next open.
 */
import type { FileIo } from "./file-io.js";
import { sealSegmentFile, sealSegmentFileSync } from "./segment-create.js";

/** A segment that stopped taking appends and is not sealed yet (its descriptor still open). */
export interface Unsealed {
  id: number;
  bytes: number;
  fileBytes: number;
  fd: number;
}

export class SealQueue {
  private unsealed: Unsealed[] = [];
  private sealing: Promise<void> = Promise.resolve();

  constructor(
    private readonly io: FileIo,
    private readonly announce: (u: Unsealed) => void,
  ) {}

  /** Seals `u` in the background after the seals before it; rejects if its seal failed. */
  push(u: Unsealed): Promise<void> {
    this.unsealed.push(u);
    const done = this.sealing.then(async () => {
      if (!this.unsealed.includes(u)) return; // sealed by a roll meanwhile
      await sealSegmentFile(this.io, u.fd, u.bytes, u.fileBytes);
      this.finish(u);
    });
    this.sealing = done.catch(() => undefined);
    return done;
  }

  /** Waits for the seals under way, then redoes any that failed; throws while one fails. */
  async sealAll(): Promise<void> {
    await this.sealing;
    for (const u of this.unsealed) await sealSegmentFile(this.io, u.fd, u.bytes, u.fileBytes);
    this.finish();
  }

  /** `sealAll` on the event loop, for the synchronous roll (only what a failed seal left, usually nothing). */
  sealAllSync(): void {
    for (const u of this.unsealed) sealSegmentFileSync(this.io, u.fd, u.bytes, u.fileBytes);
    this.finish();
  }

  /** Resolves once no seal is under way (whether it succeeded or not). */
  settled(): Promise<void> {
    return this.sealing;
  }

  /** Closes the descriptors of what is still unsealed (recovery cuts their zero tails). */
  close(): void {
    for (const u of this.unsealed.splice(0)) closeQuietly(this.io, u.fd);
  }

  /** Closes and announces sealed segments: all queued, or those up to and including `upTo`. */
  private finish(upTo?: Unsealed): void {
    const n = upTo === undefined ? this.unsealed.length : this.unsealed.indexOf(upTo) + 1;
    for (const u of this.unsealed.splice(0, n)) {
      closeQuietly(this.io, u.fd);
      this.announce(u);
    }
  }
}

export function closeQuietly(io: FileIo, fd: number): void {
  try {
    io.closeSync(fd);
  } catch {
    // Already closed, or the descriptor is gone with a failed disk: nothing to keep.
  }
}

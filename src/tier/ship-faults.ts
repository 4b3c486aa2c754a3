/**
 * The segments the tier's upload loop (./tier.ts) cannot ship whole, and what it tells operators
 * (warnings) and `ack: "object"` writers (errors) about them: which failures quarantine a segment,
 * and the words for a quarantined segment and for one shipped with damaged ranges.
 *
 * Invariants (kept by ./tier.ts with these):
 * - A permanent failure (`isPermanent`: CORRUPT, the segment's header is damaged, or its file is
 *   gone) is not retried: the segment is quarantined as "unsealable" with a loud warning and the
 *   segments after it go on being shipped. Every other failure is transient and retried.
 * - A segment whose object name already holds other bytes (./segment-ship.ts) is quarantined as
 *   "conflict": another process with this server id wrote it first, and it is never overwritten.
 * - A quarantined segment is kept locally, never uploaded or evicted, and tried again at the next
 *   start; object acks of its records are answered CORRUPT (`quarantinedError`), never OK.
 * - A segment shipped with damaged ranges is kept locally for good (never evicted), so it can be
 *   repaired from another copy; object acks of records inside those ranges are answered CORRUPT.
 */
import { StrataError } from "../errors.js";
import type { DamagedRange } from "../log/frame-scan.js";

/** Why a segment cannot be shipped: a permanent failure to seal it, or someone else's object under its name. */
export type QuarantineReason = "unsealable" | "conflict";

/**
 * Whether an upload failure will fail the same way however often it is retried: the segment cannot
 * be sealed (CORRUPT), or its file is gone. Object-store errors and read errors are transient.
 */
export function isPermanent(err: unknown): boolean {
  return StrataError.is(err, "CORRUPT") || (err as NodeJS.ErrnoException)?.code === "ENOENT";
}

/** The answer to an object ack (or a checkpoint) waiting for a quarantined segment. */
export function quarantinedError(seg: number, why: QuarantineReason): StrataError {
  return why === "conflict"
    ? new StrataError("CORRUPT", `segment ${seg} cannot be shipped: the object store already holds a different segment ${seg} of this server id, written by another process (a paused twin?); the write is durable locally only. See the server's warnings.`)
    : new StrataError("CORRUPT", `segment ${seg} is damaged and cannot be shipped to the object store; the write is durable locally only. See the server's warnings.`);
}

export function unsealableWarning(seg: number, err: unknown): string {
  return `CORRUPT: segment ${seg} cannot be shipped to the object store (${(err as Error).message}); it is quarantined on the local disk and skipped, later segments are shipped. Restore it from a copy, or move it away and run \`strata reindex\`.`;
}

export function conflictWarning(c: { seg: number; key: string; objectBytes: number; sealedBytes: number; file: string; serverId: string }): string {
  return (
    `CORRUPT: segment ${c.seg} was not shipped: object ${c.key} already holds a different segment ${c.seg} (${c.objectBytes} bytes; ours sealed ${c.sealedBytes} bytes from ${c.file}). ` +
    `Another process with server id "${c.serverId}" wrote it (a paused twin of this server, or a copy restored elsewhere); it is not overwritten. ` +
    `The local segment is kept (never evicted) and its records are never acknowledged as in the object store. Stop whichever process should not be running; copy ${c.file} away before removing its data directory.`
  );
}

export function damagedWarning(seg: number, damaged: readonly DamagedRange[]): string {
  const list = damaged.map((d) => `offset ${d.off} (${d.bytes} bytes: ${d.reason})`).join(", ");
  return `CORRUPT: segment ${seg} was shipped with damaged ranges carried as they are: ${list}. Reads of them answer CORRUPT; the segment is kept on the local disk (never evicted) so it can be repaired from another copy.`;
}

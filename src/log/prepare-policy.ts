/**
 * Whether preparing the next segment file (./segment-prepare.ts) pays for itself, judged by how
 * many bytes the log's recent fdatasyncs covered each.
 *
 * What preparing buys: an append that overwrites zeros needs no journal commit at its fdatasync
 * (ext4: 0.25–0.3 ms less per ack at one request in flight). What it costs: every byte of the log
 * is written twice, zeros first, and the zeros go through the page cache and to the disk too (on
 * the 2-vCPU VM of the benchmarks ~5 µs of CPU per KiB: 4 KiB appends at 256 in flight took
 * ~20 µs more of the server's CPU each with preparing than without). The saving is per
 * fdatasync and the cost per byte, so preparing pays while each fdatasync covers few bytes (one
 * request in flight, paced loads) and not once many records share one (many requests in flight,
 * large values, `fsync: "interval"`, where a sync covers a second of appends). Then the next
 * segment is a plain file, whose journal commit is shared by all the records of a group commit.
 *
 * Measured over the current and the previous window of `WINDOW_MS`, so a change of load is
 * followed within two windows. With nothing written yet, preparing is the default.
 */

/** Length of one measuring window. */
const WINDOW_MS = 1000;

export class PreparePolicy {
  private windowStart: number | undefined;
  private bytes = 0;
  /** The sync count when the current window began: syncs after it are the window's. */
  private syncsAtStart: number;
  /** The sync count at the last `appended` (before the batch now reported). */
  private lastSyncs: number;
  private previous = { bytes: 0, syncs: 0 };

  /** syncBytesMax: segmentPrepareSyncBytesMax; syncCount: the log's fdatasyncs so far. */
  constructor(
    private readonly syncBytesMax: number,
    syncCount = 0,
  ) {
    this.syncsAtStart = syncCount;
    this.lastSyncs = syncCount;
  }

  /** `bytes` were appended; `syncCount` is the log's running count of fdatasyncs (this batch's included); `now` in ms. */
  appended(bytes: number, syncCount: number, now: number): void {
    if (this.windowStart === undefined) {
      this.windowStart = now;
    } else if (now - this.windowStart >= WINDOW_MS) {
      // The window ends before this batch: its syncs are those up to the last batch's.
      this.previous = { bytes: this.bytes, syncs: this.lastSyncs - this.syncsAtStart };
      this.windowStart = now;
      this.syncsAtStart = this.lastSyncs;
      this.bytes = 0;
    }
    this.bytes += bytes;
    this.lastSyncs = syncCount;
  }

  /** Average bytes per fdatasync over the two windows (bytes not yet synced count as one sync's). */
  syncBytes(syncCount: number): number {
    const syncs = this.previous.syncs + syncCount - this.syncsAtStart;
    return (this.previous.bytes + this.bytes) / Math.max(1, syncs);
  }

  /** Whether the next segment should be prepared (zeroed ahead) rather than made plain at the roll. */
  shouldPrepare(syncCount: number): boolean {
    return this.syncBytes(syncCount) <= this.syncBytesMax;
  }
}

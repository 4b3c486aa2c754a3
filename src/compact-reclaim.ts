/**
 * The reclaim of compacted inputs (docs/compaction.md, step 5): deletes a superseded segment once
 * nothing can need it. Runs after every compaction and on the maintenance timer; idempotent (a
 * crash half way leaves a `segs` entry that the next pass finishes).
 *
 * Invariants (checked in this order, for each input):
 * - `compactRetainMs` passed since its switch (readers in flight holding an old pointer re-resolve
 *   it when the segment is gone: ./record-reader.ts).
 * - The local file (and its local marker, if it was an output) may go then.
 * - The object (with a tier) only once a checkpoint started after the switch is uploaded and every
 *   older checkpoint has been deleted (no restore can pick one that points into the input), and
 *   then only when no takeover pin (listed after those deletes) has a cut at or above its cover's
 *   `lo`. Then its object marker (if an output), then its `segs` entry and the other index rows of it.
 */
import fs from "node:fs";
import { faultPoint } from "./compact-fault.js";
import type { CompactParts } from "./compact-rewrite.js";
import { dropSegmentQuarantine } from "./index/apply.js";
import { setChunkSpan } from "./index/dead-chunks.js";
import type { SegmentInfo } from "./index/lmdb-index.js";
import { fsyncDir, segmentPath } from "./log/segment-files.js";
import { removeLocalMarker } from "./log/segment-set.js";
import { listCheckpoints } from "./tier/checkpoints.js";
import { pinnedCut } from "./tier/pins.js";
import { compactionMarkerKey, segmentKey } from "./tier/segment-keys.js";


export class Reclaimer {
  /** Per input: how many checkpoints had been started when it was switched (or first seen after a restart). */
  private readonly switchedAt = new Map<number, number>();
  /** The highest pinned cut seen: pins are never deleted, so inputs at or below it are skipped without a listing. */
  private pinned: number | undefined;

  constructor(private readonly d: CompactParts) {}

  /** Notes the switch of `inputs` (a checkpoint started after now makes their objects deletable). */
  switched(inputs: readonly number[]): void {
    for (const id of inputs) this.switchedAt.set(id, this.d.tier?.checkpointStarts ?? 0);
  }

  /** One pass; returns how many inputs it deleted something of. */
  async pass(stopped: () => boolean): Promise<number> {
    const { index, tier } = this.d;
    const now = this.d.clock();
    const due: Array<{ id: number; info: SegmentInfo }> = [];
    for (const { key, value } of index.segs.getRange({})) {
      if (value.state === "superseded" && (value.at ?? 0) + this.d.limits.compactRetainMs <= now) due.push({ id: key, info: value });
    }
    let deleted = 0;
    for (const { id, info } of due) {
      if (stopped()) return deleted;
      if (await this.deleteLocal(id, info)) deleted++;
    }
    if (!tier) {
      for (const { id } of due) this.forget(id);
      return deleted;
    }
    const objectsDue = due.filter(({ id, info }) => this.pinned === undefined || (info.lo ?? id) > this.pinned);
    if (objectsDue.length === 0 || stopped()) return deleted;
    for (const { id } of objectsDue) if (!this.switchedAt.has(id)) this.switchedAt.set(id, tier.checkpointStarts);
    const need = Math.max(...objectsDue.map(({ id }) => this.switchedAt.get(id)!));
    // A checkpoint started after the switch; one already in flight may have started before it.
    for (let i = 0; i < 2 && tier.checkpointUploadedStart <= need; i++) await tier.checkpoint();
    if (tier.checkpointUploadedStart <= need || stopped()) return deleted;
    const checkpoints = await listCheckpoints(tier.objects, this.d.serverId);
    for (const old of checkpoints.slice(0, -1)) await tier.objects.delete(old.key);
    // Listed only now: an importer that read a checkpoint deleted above pinned before reading.
    const cut = await pinnedCut(tier.objects, this.d.serverId);
    if (cut !== undefined) this.pinned = Math.max(this.pinned ?? 0, cut);
    for (const { id, info } of objectsDue) {
      if (stopped()) return deleted;
      if (this.pinned !== undefined && (info.lo ?? id) <= this.pinned) continue;
      await tier.objects.delete(segmentKey(this.d.serverId, id));
      tier.objectDeleted(id);
      if (info.lo !== undefined && info.hi !== undefined) await tier.objects.delete(compactionMarkerKey(this.d.serverId, { id, lo: info.lo, hi: info.hi }));
      faultPoint("reclaim-object", { seg: id });
      this.forget(id);
      deleted++;
    }
    return deleted;
  }

  /**
   * Deletes the local file of a superseded segment (and its local marker); false when there was
   * none. The unlink runs off the event loop: freeing a large file's extents can take tens of ms.
   */
  private async deleteLocal(id: number, info: SegmentInfo): Promise<boolean> {
    const dir = this.d.segmentsDir;
    const file = segmentPath(dir, id);
    if (!fs.existsSync(file)) {
      // An evicted output has no local file, but its local marker is still here.
      if (info.lo !== undefined && info.hi !== undefined) removeLocalMarker(dir, { id, lo: info.lo, hi: info.hi });
      return false;
    }
    this.d.log.forget(id);
    await fs.promises.rm(file, { force: true });
    if (info.lo !== undefined && info.hi !== undefined) removeLocalMarker(dir, { id, lo: info.lo, hi: info.hi });
    fsyncDir(dir);
    this.d.tier?.localDeleted(id);
    faultPoint("reclaim-local", { seg: id });
    return true;
  }

  /** The last step: the index forgets the segment. */
  private forget(id: number): void {
    const { index } = this.d;
    index.write(() => {
      index.segs.remove(id);
      index.deadBytes.remove(id);
      setChunkSpan(index, id, []);
      dropSegmentQuarantine(index, id);
    });
    this.switchedAt.delete(id);
    faultPoint("reclaimed", { seg: id });
  }
}

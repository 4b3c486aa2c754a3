/**
 * Which of a server's segments are in the object store, as recovery needs to know when a store
 * opens. Normally that is a listing of the object store. While the object store is unreachable, a
 * store whose local index can be trusted opens all the same: the index's segment table records
 * every segment whose upload succeeded (the tier writes "uploaded" only after the put), so only
 * what really needs the object store (reading evicted segments, object acks, uploads, a restore)
 * waits for it to come back. A segment uploaded just before a crash and not yet recorded counts as
 * not uploaded, and is shipped again (puts are idempotent).
 *
 * With compaction (docs/compaction.md) the listing also holds compaction outputs (ids from 2^31 on)
 * and their markers (`<server>/compactions/`), which say which outputs are valid; the caller
 * resolves the set with ../log/segment-set.ts `resolveSegments`. The index fallback gives the
 * outputs it knows (`segs` entries with a cover) as marked: the index learns of an output only in
 * the switch, after its marker was put.
 *
 * The index is trusted for this only when the log it reflects goes on on the local disk (its
 * checkpoint names a local segment). An index restored from a checkpoint, by a restore that was cut
 * short, knows nothing of the segments uploaded after that checkpoint: trusting it would lose them,
 * and reuse their ids for new segments.
 */
import fs from "node:fs";
import path from "node:path";
import { StrataError } from "../errors.js";
import { LmdbIndex } from "../index/lmdb-index.js";
import { unsyncedProblem } from "../index/unsynced-marker.js";
import type { Limits } from "../limits.js";
import { segmentPath } from "../log/segment-files.js";
import { isCompacted, type Cover } from "../log/segment-set.js";
import type { ObjectStore } from "./object-store.js";
import { compactionsPrefix, parseCompactionMarkerKey, parseSegmentKey, segmentsPrefix } from "./segment-keys.js";

/**
 * A server's segments in the object store: ids ascending (normal segments and compaction outputs),
 * object sizes where the listing gave them, and the compaction markers found (by output id).
 */
export interface TierSegments {
  ids: number[];
  sizes: Map<number, number>;
  markers: Cover[];
}

/** The segments of `serverId` in the object store (from the local index if it is unreachable). */
export async function tierSegments(
  objects: ObjectStore,
  serverId: string,
  dirs: { indexDir: string; segmentsDir: string },
  limits: Limits,
): Promise<TierSegments> {
  try {
    return await listSegments(objects, serverId);
  } catch (err) {
    if (!StrataError.is(err, "UNAVAILABLE")) throw err;
    const known = await uploadedPerIndex(dirs.indexDir, dirs.segmentsDir, limits);
    if (known === undefined) throw err;
    return { ...known, sizes: new Map() };
  }
}

/** Lists `serverId`'s segment objects and compaction markers (throws what the object store throws). */
export async function listSegments(objects: ObjectStore, serverId: string): Promise<TierSegments> {
  const sizes = new Map<number, number>();
  for await (const o of objects.list(segmentsPrefix(serverId))) {
    const id = parseSegmentKey(serverId, o.key);
    // Ids from 2^32 on are never a server's own (../index/foreign-logs.ts): a stray key, ignored.
    if (id !== undefined && id < OWN_SEG_SPAN) sizes.set(id, o.size);
  }
  const markers: Cover[] = [];
  for await (const o of objects.list(compactionsPrefix(serverId))) {
    const c = parseCompactionMarkerKey(serverId, o.key);
    if (c) markers.push(c);
  }
  return { ids: [...sizes.keys()].sort((a, b) => a - b), sizes, markers: markers.sort((a, b) => a.id - b.id) };
}

const OWN_SEG_SPAN = 2 ** 32;

/** The segments the local index records as uploaded, or undefined when there is no index to trust. */
async function uploadedPerIndex(indexDir: string, segmentsDir: string, limits: Limits): Promise<{ ids: number[]; markers: Cover[] } | undefined> {
  if (!fs.existsSync(path.join(indexDir, "index.mdb")) || unsyncedProblem(indexDir) !== undefined) return undefined;
  let index: LmdbIndex;
  try {
    index = LmdbIndex.open(indexDir, { metaCacheMax: limits.metaCacheMax });
  } catch (err) {
    if (StrataError.is(err, "CORRUPT")) return undefined;
    throw err;
  }
  try {
    const cp = index.checkpoint();
    if (cp === undefined || !fs.existsSync(segmentPath(segmentsDir, cp.seg))) return undefined;
    const ids: number[] = [];
    const markers: Cover[] = [];
    for (const { key, value } of index.segs.getRange({})) {
      if (value.state === "uploaded" || value.state === "damaged" || value.state === "evicted") {
        ids.push(key);
        if (isCompacted(key) && value.lo !== undefined && value.hi !== undefined) markers.push({ id: key, lo: value.lo, hi: value.hi });
      }
    }
    return { ids: ids.sort((a, b) => a - b), markers };
  } finally {
    await index.close();
  }
}

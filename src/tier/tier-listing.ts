/**
 * Which of a server's segments are in the object store, as recovery needs to know when a store
 * opens. Normally that is a listing of the object store. While the object store is unreachable, a
 * store whose local index can be trusted opens all the same: the index's segment table records
 * every segment whose upload succeeded (the tier writes "uploaded" only after the put), so only
 * what really needs the object store (reading evicted segments, object acks, uploads, a restore)
 * waits for it to come back. A segment uploaded just before a crash and not yet recorded counts as
 * not uploaded, and is shipped again (puts are idempotent).
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
import type { ObjectStore } from "./object-store.js";
import { parseSegmentKey, segmentsPrefix } from "./segment-keys.js";

/** A server's segments in the object store: ids ascending, and object sizes where the listing gave them. */
export interface TierSegments {
  ids: number[];
  sizes: Map<number, number>;
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
    return { ids: known, sizes: new Map() };
  }
}

async function listSegments(objects: ObjectStore, serverId: string): Promise<TierSegments> {
  const sizes = new Map<number, number>();
  for await (const o of objects.list(segmentsPrefix(serverId))) {
    const id = parseSegmentKey(serverId, o.key);
    if (id !== undefined) sizes.set(id, o.size);
  }
  return { ids: [...sizes.keys()].sort((a, b) => a - b), sizes };
}

/** The segments the local index records as uploaded, or undefined when there is no index to trust. */
async function uploadedPerIndex(indexDir: string, segmentsDir: string, limits: Limits): Promise<number[] | undefined> {
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
    for (const { key, value } of index.segs.getRange({})) {
      if (value.state === "uploaded" || value.state === "damaged" || value.state === "evicted") ids.push(key);
    }
    return ids.sort((a, b) => a - b);
  } finally {
    await index.close();
  }
}

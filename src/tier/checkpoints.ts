/**
 * Index checkpoints: a compacted copy of the LMDB index, zstd-compressed, named by the log
 * position it reflects at least. A server that lost its disk restores the newest one and replays
 * only the segments uploaded after that position, instead of every segment it ever wrote.
 *
 * The position is read before the copy is taken, so the copy reflects that position or more; the
 * records between are replayed again on restore, which the index skips (it applies a record only
 * when its revision is newer than the location's).
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { compress, decompress } from "zstd-napi";
import { StrataError } from "../errors.js";
import type { LmdbIndex } from "../index/lmdb-index.js";
import { fsyncDir } from "../log/segment-files.js";
import type { Limits } from "../limits.js";
import type { ObjectStore } from "./object-store.js";
import { checkpointKey, checkpointsPrefix, parseCheckpointKey } from "./segment-keys.js";

export async function uploadCheckpoint(
  index: LmdbIndex,
  objects: ObjectStore,
  serverId: string,
  limits: Limits,
  waitUploaded: (seg: number) => Promise<void>,
): Promise<void> {
  const pos = index.checkpoint();
  if (!pos) return;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "strata-checkpoint-"));
  try {
    const file = path.join(tmp, "index.mdb");
    await index.root.backup(file, true);
    const body = compress(fs.readFileSync(file));
    await waitUploaded(pos.seg);
    await objects.put(checkpointKey(serverId, pos), body);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  await pruneCheckpoints(objects, serverId, limits.checkpointsKept);
}

async function listCheckpoints(objects: ObjectStore, serverId: string): Promise<Array<{ key: string; pos: { seg: number; off: number } }>> {
  const out: Array<{ key: string; pos: { seg: number; off: number } }> = [];
  for await (const o of objects.list(checkpointsPrefix(serverId))) {
    const pos = parseCheckpointKey(serverId, o.key);
    if (pos) out.push({ key: o.key, pos });
  }
  return out.sort((a, b) => a.pos.seg - b.pos.seg || a.pos.off - b.pos.off);
}

async function pruneCheckpoints(objects: ObjectStore, serverId: string, keep: number): Promise<void> {
  const all = await listCheckpoints(objects, serverId);
  for (const old of all.slice(0, Math.max(0, all.length - keep))) await objects.delete(old.key);
}

/**
 * Writes the newest checkpoint of `serverId` as the index file in `indexDir` (atomically) and
 * returns the position it reflects, or undefined when the object store has none.
 */
export async function restoreCheckpoint(objects: ObjectStore, serverId: string, indexDir: string): Promise<{ seg: number; off: number } | undefined> {
  const all = await listCheckpoints(objects, serverId);
  for (let i = all.length - 1; i >= 0; i--) {
    const { key, pos } = all[i]!;
    const body = await objects.get(key);
    if (!body) continue;
    let raw: Buffer;
    try {
      raw = decompress(body);
    } catch (cause) {
      throw new StrataError("CORRUPT", `index checkpoint ${key} does not decompress; delete it to fall back to an older one`, { cause });
    }
    fs.mkdirSync(indexDir, { recursive: true });
    const file = path.join(indexDir, "index.mdb");
    const tmp = `${file}.restore`;
    const fd = fs.openSync(tmp, "w");
    try {
      fs.writeSync(fd, raw);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
    fsyncDir(indexDir);
    return pos;
  }
  return undefined;
}

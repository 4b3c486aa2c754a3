/**
 * Index checkpoints: a compacted copy of the LMDB index, zstd-compressed, named by a log position
 * at or after the one it reflects. A server that lost its disk restores the newest one and replays
 * only the segments uploaded after it, instead of every segment it ever wrote.
 *
 * The copy is a consistent snapshot (one read transaction) whose own recovery checkpoint says how
 * much of the log it reflects; restore replays from there. That position can only be at or before
 * the index's position read once the copy is done, so the checkpoint is put only after the segment
 * holding that later position (and, uploads being in order, every segment before it) is in the
 * object store: a restored index never points at a segment the object store does not have.
 *
 * Object layout: `"STRATCKP"` | u32 CRC-32 of the rest | zstd frame of the index file. zstd has no
 * checksum of its own here, and a flipped bit could otherwise decompress to a subtly wrong index.
 * A checkpoint that fails verification (twice, in case the damage was in transit) is skipped for
 * the next older one, or for a replay of every segment when none is left.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { crc32 } from "node:zlib";
import { pipeline } from "node:stream/promises";
import { CompressStream, decompress } from "zstd-napi";
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
  /** Resolves once every record up to `pos` is in an uploaded segment. */
  waitUploaded: (pos: { seg: number; off: number }) => Promise<void>,
): Promise<void> {
  if (!index.checkpoint()) return;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "strata-checkpoint-"));
  try {
    const file = path.join(tmp, "index.mdb");
    await index.root.backup(file, true);
    // Read after the snapshot, so it is at or past the position the snapshot reflects.
    const pos = index.checkpoint()!;
    const body = frameCheckpoint(await compressFile(file));
    await waitUploaded(pos);
    await objects.put(checkpointKey(serverId, pos), body);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  await pruneCheckpoints(objects, serverId, limits.checkpointsKept);
}

/** The checkpoints of `serverId` in the object store, oldest first, with the log positions their keys name. */
export async function listCheckpoints(objects: ObjectStore, serverId: string): Promise<Array<{ key: string; pos: { seg: number; off: number } }>> {
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
 * The zstd frame of a file, compressed as it is read, a piece at a time: an index copy can be
 * tens of MiB, and compressing it in one synchronous call would stall every request the process
 * serves for that long (compaction's reclaim and the checkpoint timer both get here).
 */
async function compressFile(file: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  await pipeline(fs.createReadStream(file, { highWaterMark: CHECKPOINT_READ_BYTES }), new CompressStream(), async (source: AsyncIterable<Buffer>) => {
    for await (const part of source) parts.push(part);
  });
  return Buffer.concat(parts);
}

/** Bytes of the index copy read (and compressed) per turn of the event loop. */
const CHECKPOINT_READ_BYTES = 256 * 1024;

const CHECKPOINT_MAGIC = Buffer.from("STRATCKP", "latin1");
const CHECKPOINT_HEADER_BYTES = 12;
const CHECKPOINT_READ_ATTEMPTS = 2;

function frameCheckpoint(compressed: Buffer): Buffer {
  const header = Buffer.alloc(CHECKPOINT_HEADER_BYTES);
  CHECKPOINT_MAGIC.copy(header, 0);
  header.writeUInt32BE(crc32(compressed), 8);
  return Buffer.concat([header, compressed]);
}

/** The index file held by a checkpoint object, or a CORRUPT error saying what is wrong with it. */
export function unframeCheckpoint(key: string, objectUntrusted: Uint8Array): Buffer {
  const obj = Buffer.from(objectUntrusted.buffer, objectUntrusted.byteOffset, objectUntrusted.byteLength);
  const bad = (why: string, cause?: unknown) =>
    new StrataError("CORRUPT", `index checkpoint ${key} is damaged (${why}); it is skipped for an older one`, cause === undefined ? {} : { cause });
  if (obj.byteLength < CHECKPOINT_HEADER_BYTES || !obj.subarray(0, 8).equals(CHECKPOINT_MAGIC)) throw bad("bad magic");
  const compressed = obj.subarray(CHECKPOINT_HEADER_BYTES);
  if (crc32(compressed) !== obj.readUInt32BE(8)) throw bad("checksum mismatch");
  try {
    return decompress(compressed);
  } catch (cause) {
    throw bad("does not decompress", cause);
  }
}

/** Reads and verifies one checkpoint; undefined when it is gone, CORRUPT when it stays damaged. */
export async function readCheckpoint(objects: ObjectStore, key: string): Promise<Buffer | undefined> {
  for (let attempt = 1; ; attempt++) {
    const body = await objects.get(key);
    if (!body) return undefined;
    try {
      return unframeCheckpoint(key, body);
    } catch (err) {
      if (attempt >= CHECKPOINT_READ_ATTEMPTS) throw err;
    }
  }
}

/**
 * Writes the newest valid checkpoint of `serverId` as the index file in `indexDir` (atomically)
 * and returns the position it is named by, or undefined when the object store has none. Damaged
 * checkpoints are skipped (and reported to `onDamaged`); an unreachable object store rejects.
 */
export async function restoreCheckpoint(
  objects: ObjectStore,
  serverId: string,
  indexDir: string,
  onDamaged: (err: StrataError) => void = () => undefined,
): Promise<{ seg: number; off: number } | undefined> {
  const all = await listCheckpoints(objects, serverId);
  for (let i = all.length - 1; i >= 0; i--) {
    const { key, pos } = all[i]!;
    let raw: Buffer | undefined;
    try {
      raw = await readCheckpoint(objects, key);
    } catch (err) {
      if (!StrataError.is(err, "CORRUPT")) throw err;
      onDamaged(err);
      continue;
    }
    if (!raw) continue;
    fs.mkdirSync(indexDir, { recursive: true });
    const file = path.join(indexDir, "index.mdb");
    const tmp = `${file}.restore`;
    const fd = fs.openSync(tmp, "w");
    try {
      for (let done = 0; done < raw.byteLength; ) done += fs.writeSync(fd, raw, done, raw.byteLength - done, done);
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

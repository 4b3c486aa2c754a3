/**
 * Checks of the LMDB index file made before lmdb maps it. LMDB trusts its file: a truncated file
 * makes a mapped read fault (SIGBUS), a garbage page makes it follow wild pointers (SIGSEGV), and
 * either kills the process instead of throwing. So nothing maps `index.mdb` until it passed:
 *
 * 1. Our own checksum, when there is one: a clean close (lmdb-index.ts `close`) fsyncs the file and
 *    then writes `index.sum` beside it (size and CRC-32 of the whole file, atomically). Opening
 *    checks the file against it, then removes it (durably) before anything can write, so a sum on
 *    disk always describes the file as it was last closed. This catches any damage to a file that
 *    was closed cleanly: a garbage page anywhere, a truncation, bytes flipped on disk.
 * 2. The LMDB meta pages, always (also after a process crash, when there is no sum): the file is
 *    at least two pages long; both meta pages (page 0 and 1) have the LMDB magic, data version,
 *    their own page number and the meta flag, and name the same page size (a power of two); the
 *    file is a whole number of pages; the newer meta's database roots lie inside the file.
 *
 * What is not caught: a page in the middle damaged after a process crash (no sum was written) and
 * before the restart. The unsynced marker (./unsynced-marker.ts) has the index rebuilt after an OS
 * crash, when torn pages are likely; between a process crash and its restart they are not.
 *
 * Layout read here (lmdb-js 3.x, LMDB data version 2, little-endian): a page starts with pgno (8),
 * txnid (8), pad (2), flags (2), lower/upper (4); the meta follows at byte 24: magic (4), version
 * (4), address (8), mapsize (8), two database records of 48 bytes (free, main: pad holds the page
 * size in the free one; root page at +40), last page (8), txnid (8).
 */
import { crc32 } from "node:zlib";
import fs from "node:fs";
import path from "node:path";
import { fsyncDir } from "../log/segment-files.js";

export const INDEX_FILE = "index.mdb";
const SUM_FILE = "index.sum";

const MAGIC = 0xbeefc0de;
const DATA_VERSION = 2;
const P_META = 0x08;
const PAGE_FLAGS_AT = 18;
const META_AT = 24;
const DB_BYTES = 48;
const DBS_AT = META_AT + 24;
const ROOT_IN_DB = 40;
const LAST_PAGE_AT = DBS_AT + 2 * DB_BYTES;
const TXNID_AT = LAST_PAGE_AT + 8;
const META_BYTES = TXNID_AT + 8;
const PAGE_BYTES_MIN = 512;
const PAGE_BYTES_MAX = 65536;
/** "No root": an empty database. */
const P_INVALID = 0xffffffffffffffffn;
const READ_SLICE_BYTES = 4 * 1024 * 1024;

/**
 * Why the index file in `dir` must not be mapped, or undefined when it may be (or does not exist:
 * LMDB creates it). Reads the meta pages and, when a checksum was left by a clean close, the file.
 */
export function indexFileProblem(dir: string): string | undefined {
  const file = path.join(dir, INDEX_FILE);
  let fd: number;
  try {
    fd = fs.openSync(file, "r");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    return `the index file cannot be opened (${(err as Error).message})`;
  }
  try {
    const size = fs.fstatSync(fd).size;
    const sum = readSum(dir);
    if (sum !== undefined) {
      if (sum.bytes !== size) return `the index file holds ${size} bytes, but it had ${sum.bytes} when it was closed`;
      if (fileCrc(fd, size) !== sum.crc) return "the index file does not match the checksum written when it was closed";
    }
    return metaProblem(fd, size);
  } finally {
    fs.closeSync(fd);
  }
}

function metaProblem(fd: number, size: number): string | undefined {
  if (size === 0) return "the index file is empty";
  const first = Buffer.alloc(META_BYTES);
  if (fs.readSync(fd, first, 0, META_BYTES, 0) < META_BYTES) return `the index file is too short (${size} bytes)`;
  const pageBytes = first.readUInt32LE(DBS_AT);
  if (pageBytes < PAGE_BYTES_MIN || pageBytes > PAGE_BYTES_MAX || (pageBytes & (pageBytes - 1)) !== 0) {
    return `the index file's first meta page names an impossible page size (${pageBytes})`;
  }
  if (size < 2 * pageBytes) return `the index file (${size} bytes) is shorter than its two meta pages`;
  const second = Buffer.alloc(META_BYTES);
  fs.readSync(fd, second, 0, META_BYTES, pageBytes);
  const metas = [first, second];
  for (let pgno = 0; pgno < 2; pgno++) {
    const m = metas[pgno]!;
    if (m.readBigUInt64LE(0) !== BigInt(pgno) || (m.readUInt16LE(PAGE_FLAGS_AT) & P_META) === 0) return `page ${pgno} of the index file is not a meta page`;
    if (m.readUInt32LE(META_AT) !== MAGIC) return `meta page ${pgno} of the index file lacks the LMDB magic`;
    const version = m.readUInt32LE(META_AT + 4);
    if (version !== DATA_VERSION) return `meta page ${pgno} of the index file has LMDB data version ${version}, this Strata reads ${DATA_VERSION}`;
    if (m.readUInt32LE(DBS_AT) !== pageBytes) return `the index file's meta pages disagree on the page size`;
  }
  if (size % pageBytes !== 0) return `the index file (${size} bytes) is not a whole number of ${pageBytes}-byte pages`;
  // The meta with the larger transaction id is the one LMDB uses. Its last page number may lie
  // past the end of the file (pages allocated and freed again in one transaction are never
  // written), but the roots it names must be in the file.
  const current = first.readBigUInt64LE(TXNID_AT) >= second.readBigUInt64LE(TXNID_AT) ? first : second;
  const pages = BigInt(size / pageBytes);
  for (let db = 0; db < 2; db++) {
    const root = current.readBigUInt64LE(DBS_AT + db * DB_BYTES + ROOT_IN_DB);
    if (root !== P_INVALID && (root < 2n || root >= pages)) return `the index file is truncated or damaged: its meta page names root page ${root}, outside pages 2..${pages - 1n}`;
  }
  return undefined;
}

function fileCrc(fd: number, size: number): number {
  const buf = Buffer.allocUnsafe(Math.min(size, READ_SLICE_BYTES));
  let crc = 0;
  for (let at = 0; at < size; ) {
    const n = fs.readSync(fd, buf, 0, Math.min(buf.byteLength, size - at), at);
    if (n === 0) break;
    crc = crc32(buf.subarray(0, n), crc);
    at += n;
  }
  return crc;
}

function readSum(dir: string): { bytes: number; crc: number } | undefined {
  let text: string;
  try {
    text = fs.readFileSync(path.join(dir, SUM_FILE), "utf8");
  } catch {
    return undefined;
  }
  try {
    const s = JSON.parse(text) as { bytes?: unknown; crc?: unknown };
    if (typeof s.bytes === "number" && typeof s.crc === "number") return { bytes: s.bytes, crc: s.crc };
  } catch {
    // A damaged sum file is no evidence either way; the meta checks still run.
  }
  return undefined;
}

/** Removes the checksum before the index is written to (durably: it would describe an old file). */
export function dropIndexSum(dir: string): void {
  const file = path.join(dir, SUM_FILE);
  if (!fs.existsSync(file)) return;
  fs.rmSync(file, { force: true });
  fsyncDir(dir);
}

/** After a clean close (the file fsync'd): records its size and checksum, atomically. */
export function writeIndexSum(dir: string): void {
  const file = path.join(dir, INDEX_FILE);
  const fd = fs.openSync(file, "r");
  let sum: { bytes: number; crc: number };
  try {
    const size = fs.fstatSync(fd).size;
    sum = { bytes: size, crc: fileCrc(fd, size) };
  } finally {
    fs.closeSync(fd);
  }
  const target = path.join(dir, SUM_FILE);
  const tmp = `${target}.tmp`;
  const out = fs.openSync(tmp, "w");
  try {
    fs.writeSync(out, JSON.stringify(sum) + "\n");
    fs.fsyncSync(out);
  } finally {
    fs.closeSync(out);
  }
  fs.renameSync(tmp, target);
  fsyncDir(dir);
}

/**
 * Moves a damaged index directory aside (kept for forensics) as `<dir>.damaged-<time>`, and
 * returns the new path. The log is the truth; the index is rebuilt from it.
 */
export function moveIndexAside(dir: string, now: number): string {
  const base = `${dir}.damaged-${new Date(now).toISOString().replace(/[:.]/g, "-")}`;
  // A second damaged index within the same millisecond (or clock value) must not collide.
  let aside = base;
  for (let n = 1; fs.existsSync(aside); n++) aside = `${base}-${n}`;
  fs.renameSync(dir, aside);
  fsyncDir(path.dirname(dir));
  return aside;
}

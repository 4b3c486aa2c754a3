/**
 * The directory backend of the object store: one file per object under a root directory, which
 * may be a local disk or a shared NFS mount. Key `a/b/c` is the file `ROOT/a/b/c`.
 *
 * Invariants:
 * - A put is atomic: the body goes to a temp file in the object's own directory, which is
 *   fsync'd, renamed over the final name and then the directory is fsync'd. Readers open the
 *   final name only, and a rename replaces the inode, so an open reader keeps the old bytes.
 * - `putIfAbsent` is create-only, enforced: the temp file is fsync'd and then hard-linked to the
 *   final name, which `link()` refuses atomically when the name exists (also over NFS, where it is
 *   the classic lock-file primitive; a retransmitted link whose first try succeeded is recognised
 *   by the temp file's link count). The temp name is unlinked and the directory fsync'd after.
 * - Temp file names contain `~`, which no key segment may contain, so they can never collide
 *   with an object and `list` never shows them (nor one left behind by a crash).
 * - `list` walks the tree lazily, one sorted directory at a time, so its memory is bounded by
 *   the largest directory rather than by the number of objects. Lexicographic key order holds
 *   because a directory `d` is ordered as if it were named `d/` among its siblings.
 * - Directories are created on demand and left in place when they become empty; an empty
 *   directory holds no keys and costs nothing to list.
 */
import { randomBytes } from "node:crypto";
import { link, mkdir, open, readdir, rename, stat, unlink, type FileHandle } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { ioError, StrataError } from "../errors.js";
import {
  closedError,
  isKeySegment,
  validateBody,
  validateKey,
  validatePrefix,
  validateRange,
  type ByteRange,
  type ObjectInfo,
  type CreateOnly,
  type ObjectStore,
  type PutIfAbsentResult,
} from "./object-store.js";

export interface DirStoreOptions {
  /** Root directory of the store; created on the first put. Relative paths resolve against the cwd. */
  path: string;
}

/**
 * Error numbers meaning that the file system is unreachable rather than broken: an NFS server
 * that went away or a mount that went stale. Retrying later can succeed.
 */
const UNAVAILABLE_ERRNOS: ReadonlySet<string> = new Set([
  "ESTALE", "ETIMEDOUT", "EHOSTDOWN", "EHOSTUNREACH", "ENETDOWN", "ENETUNREACH", "ENOTCONN",
  "ECONNREFUSED", "ECONNRESET",
]);

/** Error numbers that, on a lookup, mean "no such object" (a missing file or a missing parent). */
const MISSING_ERRNOS: ReadonlySet<string> = new Set(["ENOENT", "ENOTDIR"]);

/** Error numbers of a file system that cannot make hard links (FAT, some FUSE and SMB mounts). */
const NO_LINK_ERRNOS: ReadonlySet<string> = new Set(["EPERM", "ENOTSUP", "EOPNOTSUPP", "ENOSYS"]);

function errnoOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

function fsFailure(what: string, err: unknown): StrataError {
  if (err instanceof StrataError) return err;
  const code = errnoOf(err);
  if (code !== undefined && UNAVAILABLE_ERRNOS.has(code)) {
    const detail = err instanceof Error ? err.message : String(err);
    return new StrataError("UNAVAILABLE",
      `${what} failed: ${detail}. The store directory (an NFS mount?) is unreachable; retry once it is back.`,
      { cause: err });
  }
  return ioError(what, err);
}

function keyConflict(key: string, cause: unknown): StrataError {
  return new StrataError("INVALID_ARGUMENT",
    `cannot store object ${JSON.stringify(key)}: a directory store cannot hold both a key and keys below it ` +
    `(like "a" and "a/b"), and one of them already exists`, { cause });
}

export class DirObjectStore implements ObjectStore {
  readonly root: string;
  readonly createOnly: CreateOnly = "enforced";
  private closed = false;

  constructor(options: DirStoreOptions) {
    if (typeof options?.path !== "string" || options.path.length === 0) {
      throw new StrataError("INVALID_ARGUMENT", "the directory object store needs a non-empty path");
    }
    this.root = resolve(options.path);
  }

  async put(key: string, body: Uint8Array): Promise<void> {
    const { file, dir, temp } = await this.stage(key, body);
    try {
      await rename(temp, file);
    } catch (err) {
      await unlink(temp).catch(() => undefined);
      if (errnoOf(err) === "EISDIR") throw keyConflict(key, err);
      throw fsFailure(`writing object ${key}`, err);
    }
    try {
      await fsyncDir(dir);
    } catch (err) {
      throw fsFailure(`syncing the directory of object ${key}`, err);
    }
  }

  async putIfAbsent(key: string, body: Uint8Array): Promise<PutIfAbsentResult> {
    const { file, dir, temp } = await this.stage(key, body);
    let result: PutIfAbsentResult;
    try {
      result = await linkNew(temp, file);
    } catch (err) {
      await unlink(temp).catch(() => undefined);
      if (NO_LINK_ERRNOS.has(errnoOf(err) ?? "")) {
        throw new StrataError("IO",
          `writing object ${key} create-only failed: the file system under ${this.root} does not support hard links ` +
          `(${errnoOf(err)}); put the store on a local file system or an NFS mount`, { cause: err, retryable: false });
      }
      throw fsFailure(`writing object ${key}`, err);
    }
    if (result === "exists" && !(await stat(file).then((info) => info.isFile(), () => true))) {
      await unlink(temp).catch(() => undefined);
      throw keyConflict(key, undefined);
    }
    try {
      // The object is complete under its final name already; the temp name only has to go.
      await unlink(temp);
      await fsyncDir(dir);
    } catch (err) {
      throw fsFailure(`syncing the directory of object ${key}`, err);
    }
    return result;
  }

  /** The first half of every write: checks, the key's directory, and the body fsync'd under a temp name beside it. */
  private async stage(key: string, body: Uint8Array): Promise<{ file: string; dir: string; temp: string }> {
    this.checkOpen();
    validateKey(key);
    validateBody(body);
    const file = this.fileOf(key);
    const dir = dirname(file);
    await this.prepareDir(key, dir);
    const temp = tempName(dir);
    try {
      await writeDurably(temp, body);
    } catch (err) {
      await unlink(temp).catch(() => undefined);
      throw fsFailure(`writing object ${key}`, err);
    }
    return { file, dir, temp };
  }

  async get(key: string, range?: ByteRange): Promise<Uint8Array | undefined> {
    this.checkOpen();
    validateKey(key);
    validateRange(range);
    let fh: FileHandle;
    try {
      fh = await open(this.fileOf(key), "r");
    } catch (err) {
      if (MISSING_ERRNOS.has(errnoOf(err) ?? "")) return undefined;
      throw fsFailure(`opening object ${key}`, err);
    }
    try {
      const info = await fh.stat();
      // On Linux a directory opens fine for reading; it is not an object.
      if (!info.isFile()) return undefined;
      const start = range === undefined ? 0 : Math.min(range.offset, info.size);
      const end = range === undefined ? info.size : Math.min(info.size, range.offset + range.length);
      return await readAt(fh, start, end - start);
    } catch (err) {
      throw fsFailure(`reading object ${key}`, err);
    } finally {
      await fh.close().catch(() => undefined);
    }
  }

  async head(key: string): Promise<{ size: number } | undefined> {
    this.checkOpen();
    validateKey(key);
    try {
      const info = await stat(this.fileOf(key));
      return info.isFile() ? { size: info.size } : undefined;
    } catch (err) {
      if (MISSING_ERRNOS.has(errnoOf(err) ?? "")) return undefined;
      throw fsFailure(`reading the size of object ${key}`, err);
    }
  }

  async *list(prefix: string): AsyncGenerator<ObjectInfo> {
    this.checkOpen();
    validatePrefix(prefix);
    // Only the directories that are whole segments of the prefix can hold matches, so the walk
    // starts at the deepest of them and prunes siblings that cannot match.
    const cut = prefix.lastIndexOf("/");
    yield* this.walk(cut < 0 ? "" : prefix.slice(0, cut), prefix);
  }

  async delete(key: string): Promise<void> {
    this.checkOpen();
    validateKey(key);
    const file = this.fileOf(key);
    try {
      await unlink(file);
    } catch (err) {
      // EISDIR: the key names a directory of other keys, so there is no object to delete.
      const code = errnoOf(err) ?? "";
      if (MISSING_ERRNOS.has(code) || code === "EISDIR") return;
      throw fsFailure(`deleting object ${key}`, err);
    }
    try {
      await fsyncDir(dirname(file));
    } catch (err) {
      throw fsFailure(`syncing the directory of deleted object ${key}`, err);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  private checkOpen(): void {
    if (this.closed) throw closedError("directory");
  }

  private fileOf(key: string): string {
    return join(this.root, ...key.split("/"));
  }

  /** Creates the object's directory, turning "a file is in the way" into the key-conflict error. */
  private async prepareDir(key: string, dir: string): Promise<void> {
    try {
      await this.ensureDir(dir);
    } catch (err) {
      if (errnoOf(err) === "ENOTDIR" || errnoOf(err) === "EEXIST") throw keyConflict(key, err);
      throw fsFailure(`creating the directory of object ${key}`, err);
    }
  }

  /** Creates `dir` and fsyncs the parent of every directory created, so new entries survive a crash. */
  private async ensureDir(dir: string): Promise<void> {
    const first = await mkdir(dir, { recursive: true });
    if (first === undefined) return;
    // New entries live in dirname(first) .. dirname(dir); `dir` itself is synced after the rename.
    const stopAt = dirname(first);
    for (let d = dirname(dir); ; d = dirname(d)) {
      await fsyncDir(d);
      if (d === stopAt || dirname(d) === d) break;
    }
  }

  private async *walk(dirKey: string, prefix: string): AsyncGenerator<ObjectInfo> {
    const dirPath = dirKey === "" ? this.root : this.fileOf(dirKey);
    let names: Array<{ name: string; isDir: boolean; order: string }>;
    try {
      const entries = await readdir(dirPath, { withFileTypes: true });
      names = entries
        .filter((e) => isKeySegment(e.name) && (e.isFile() || e.isDirectory()))
        .map((e) => ({ name: e.name, isDir: e.isDirectory(), order: e.isDirectory() ? `${e.name}/` : e.name }));
    } catch (err) {
      if (MISSING_ERRNOS.has(errnoOf(err) ?? "")) return;
      throw fsFailure(`listing directory ${dirPath}`, err);
    }
    // Plain code-unit comparison: keys are ASCII, so this is byte order, the order S3 lists in.
    names.sort((a, b) => (a.order < b.order ? -1 : a.order > b.order ? 1 : 0));
    for (const { name, isDir } of names) {
      this.checkOpen();
      const key = dirKey === "" ? name : `${dirKey}/${name}`;
      if (isDir) {
        const below = `${key}/`;
        if (below.startsWith(prefix) || prefix.startsWith(below)) yield* this.walk(key, prefix);
        continue;
      }
      if (!key.startsWith(prefix)) continue;
      let size: number;
      try {
        const info = await stat(join(dirPath, name));
        if (!info.isFile()) continue;
        size = info.size;
      } catch (err) {
        if (MISSING_ERRNOS.has(errnoOf(err) ?? "")) continue; // deleted while we were listing
        throw fsFailure(`reading the size of object ${key}`, err);
      }
      yield { key, size };
    }
  }
}

function tempName(dir: string): string {
  return join(dir, `.tmp~${process.pid}-${randomBytes(8).toString("hex")}`);
}

/**
 * Links `temp` to `file` unless `file` exists. EEXIST is "exists", unless `temp` has two links:
 * then an earlier try of this very link succeeded and only its reply was lost (an NFS client
 * retransmits, and the server answers the retry EEXIST), so the object is ours. Exported for tests.
 */
export async function linkNew(temp: string, file: string): Promise<PutIfAbsentResult> {
  try {
    await link(temp, file);
    return "created";
  } catch (err) {
    if (errnoOf(err) !== "EEXIST") throw err;
    const links = await stat(temp).then((info) => info.nlink, () => 1);
    return links >= 2 ? "created" : "exists";
  }
}

async function writeDurably(path: string, body: Uint8Array): Promise<void> {
  const fh = await open(path, "wx");
  try {
    await fh.writeFile(body);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Reads exactly `length` bytes at `position` (fewer only if the file is shorter than its stat said). */
async function readAt(fh: FileHandle, position: number, length: number): Promise<Uint8Array> {
  const out = new Uint8Array(length);
  let done = 0;
  while (done < length) {
    const { bytesRead } = await fh.read(out, done, length - done, position + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done === length ? out : out.subarray(0, done);
}

async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } catch (err) {
    // Some file systems cannot fsync a directory; their renames are then as durable as they get.
    if (errnoOf(err) !== "EINVAL") throw err;
  } finally {
    await fh.close();
  }
}

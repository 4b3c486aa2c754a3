/**
 * The index's unsynced marker. LMDB runs with `noSync` (the log is the truth), so after an OS
 * crash or power loss the index file may have lost committed pages or hold torn ones; after a mere
 * process crash it is intact, because everything it wrote is in the OS page cache.
 *
 * To tell the two apart, `<indexDir>.unsynced` holds the kernel's boot id from the moment the
 * index is opened until it has been fsync'd at a clean close. At open, a marker from another boot
 * means the machine went down with the index open: the index is rebuilt from the log. The marker
 * sits next to the index directory, not in it, so it survives the index being destroyed for a
 * rebuild (a crash during the rebuild must lead to another rebuild).
 *
 * Where the boot id cannot be read (not Linux), any marker left behind counts as another boot.
 */
import fs from "node:fs";
import path from "node:path";
import { fsyncDir } from "../log/segment-files.js";

const BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id";
const UNKNOWN_BOOT = "unknown";

export function unsyncedMarkerPath(indexDir: string): string {
  return `${indexDir}.unsynced`;
}

/** The id of the running kernel's boot, or "unknown". */
export function bootId(): string {
  try {
    return fs.readFileSync(BOOT_ID_FILE, "utf8").trim() || UNKNOWN_BOOT;
  } catch {
    return UNKNOWN_BOOT;
  }
}

/**
 * Why the index cannot be trusted after the previous run, or undefined when it can (no marker:
 * closed cleanly; a marker of this boot: the process, not the machine, went down).
 */
export function unsyncedProblem(indexDir: string, currentBoot: string = bootId()): string | undefined {
  let content: string;
  try {
    content = fs.readFileSync(unsyncedMarkerPath(indexDir), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  const markerBoot = parseMarker(content);
  if (currentBoot === UNKNOWN_BOOT) return "the index was not closed cleanly, and without a boot id an OS crash cannot be ruled out";
  if (markerBoot !== currentBoot) return "the machine restarted (OS crash or power loss) while the index was open, so its last writes may be lost";
  return undefined;
}

function parseMarker(content: string): string | undefined {
  try {
    const parsed = JSON.parse(content) as { bootId?: unknown };
    return typeof parsed.bootId === "string" ? parsed.bootId : undefined;
  } catch {
    return undefined;
  }
}

/** Writes the marker atomically and durably (temp file, fsync, rename, fsync the directory). */
export function writeUnsyncedMarker(indexDir: string, currentBoot: string = bootId()): void {
  const file = unsyncedMarkerPath(indexDir);
  const tmp = `${file}.tmp`;
  const fd = fs.openSync(tmp, "w");
  try {
    fs.writeSync(fd, JSON.stringify({ bootId: currentBoot }) + "\n");
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  fsyncDir(path.dirname(file));
}

/** Removes the marker once the index is fsync'd and closed. */
export function removeUnsyncedMarker(indexDir: string): void {
  fs.rmSync(unsyncedMarkerPath(indexDir), { force: true });
  fsyncDir(path.dirname(indexDir));
}

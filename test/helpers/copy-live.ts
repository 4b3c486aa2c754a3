/**
 * Copies files that a running store may still be changing, as a kill -9 would leave them: each
 * file is read until it ends, however its size changes meanwhile. `fs.cpSync` / `copyFileSync`
 * must not be used for that: libuv copies the size it saw at the start with sendfile and loops
 * for ever when the file shrinks under it (a seal truncating a segment's zero tail in the thread
 * pool while the event loop is blocked in the copy).
 */
import fs from "node:fs";
import path from "node:path";

const CHUNK_BYTES = 1024 * 1024;

/** Copies one file by reading it to its end. */
export function copyLiveFile(from: string, to: string): void {
  const src = fs.openSync(from, "r");
  const dst = fs.openSync(to, "w");
  try {
    const buf = Buffer.allocUnsafe(CHUNK_BYTES);
    for (let at = 0; ; ) {
      const n = fs.readSync(src, buf, 0, buf.byteLength, at);
      if (n === 0) return;
      fs.writeSync(dst, buf, 0, n, at);
      at += n;
    }
  } finally {
    fs.closeSync(src);
    fs.closeSync(dst);
  }
}

/** Copies a file or a directory tree (files whose name `skip` accepts are left out). */
export function copyLive(from: string, to: string, skip: (name: string) => boolean = () => false): void {
  if (!fs.statSync(from).isDirectory()) return copyLiveFile(from, to);
  fs.mkdirSync(to, { recursive: true });
  for (const entry of fs.readdirSync(from, { withFileTypes: true })) {
    if (skip(entry.name)) continue;
    const src = path.join(from, entry.name);
    if (entry.isDirectory()) copyLive(src, path.join(to, entry.name), skip);
    else if (entry.isFile()) {
      try {
        copyLiveFile(src, path.join(to, entry.name));
      } catch (err) {
        // A file removed since the listing (a finished seal's temporary, a reclaimed input) is not copied.
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      }
    }
  }
}

/**
 * One process, one store per data directory. Two writers appending to the same segment would
 * interleave records, so `Store.open` takes `<dir>/LOCK` (holding the owner's pid) and refuses
 * a directory held by a live process. A lock left by a process that died is taken over.
 */
import fs from "node:fs";
import path from "node:path";
import { StrataError } from "./errors.js";

const heldHere = new Set<string>();

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

export function acquireDataLock(dir: string): () => void {
  const file = path.join(dir, "LOCK");
  if (heldHere.has(file)) {
    throw new StrataError("UNAVAILABLE", `the data directory ${dir} is already open in this process; close the other Store first`);
  }
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(file, String(process.pid), { flag: "wx" });
      heldHere.add(file);
      return () => {
        heldHere.delete(file);
        fs.rmSync(file, { force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const owner = Number.parseInt(fs.readFileSync(file, "utf8"), 10);
      if (Number.isSafeInteger(owner) && owner !== process.pid && alive(owner)) {
        throw new StrataError("UNAVAILABLE", `the data directory ${dir} is in use by process ${owner}; stop it or use another --data directory`);
      }
      fs.rmSync(file, { force: true });
    }
  }
  throw new StrataError("UNAVAILABLE", `could not lock the data directory ${dir}; another process keeps taking it`);
}

/**
 * Repair paths must not make things worse (issue #8 item 3):
 * - A damaged `index.mdb` (truncated, a garbage page, empty, random bytes) is detected before
 *   lmdb maps it, moved aside and rebuilt from the log. Opened in a child process, since a SIGBUS
 *   or SIGSEGV would kill vitest's worker: the child must exit normally and serve everything.
 * - `strata reindex` builds beside the old index: a reindex that fails leaves the old index as it
 *   was (the store still opens without a rebuild), and one killed with SIGKILL halfway leaves a
 *   store that opens and serves everything.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Store } from "../../src/mod.js";
import { StrataError } from "../../src/errors.js";
import { indexFileProblem, moveIndexAside } from "../../src/index/index-check.js";
import { bootId, unsyncedMarkerPath } from "../../src/index/unsynced-marker.js";
import { listSegmentIds, segmentPath } from "../../src/log/segment-files.js";
import { mulberry32 } from "../../src/random.js";
import type { LogEvent } from "../helpers/capture-logger.js";
import { all } from "../helpers/collect.js";
import { INDEX_CHILD_LIMITS, INDEX_CHILD_STREAMS } from "./index-child.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CHILD = path.join(HERE, "index-child.ts");
const REPO = path.resolve(HERE, "../..");
const MESSAGES = 1500;
const PAGE = 4096;
const enc = (s: string) => new TextEncoder().encode(s);

let root: string;
let pristine: string;
const expected = Array.from({ length: MESSAGES }, (_, i) => i + 1);

beforeAll(async () => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), "strata-index-damage-"));
  pristine = path.join(root, "pristine");
  const store = await Store.open({ dir: pristine, limits: INDEX_CHILD_LIMITS, sweepTimers: false });
  for (const loc of INDEX_CHILD_STREAMS) {
    for (let i = 0; i < MESSAGES; i += 500) {
      await store.stream(loc).appendMany(Array.from({ length: 500 }, (_, k) => ({ message: { value: enc(`${loc} message ${i + k + 1} `.repeat(3)) } })));
    }
  }
  await store.kv("d/kv").set("key", enc("kv value"));
  await store.close();
  expect(listSegmentIds(path.join(pristine, "segments")).length).toBeGreaterThan(3);
  expect(fs.statSync(indexFile(pristine)).size).toBeGreaterThan(8 * PAGE);
});
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

const indexFile = (dir: string) => path.join(dir, "index", "index.mdb");
let copies = 0;
function copy(): string {
  const dir = path.join(root, `copy-${++copies}`);
  fs.cpSync(pristine, dir, { recursive: true });
  return dir;
}

interface ChildResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  out: string;
  err: string;
}
function runChild(mode: "open" | "reindex", dirs: string[], onSpawn?: (pid: number) => void): Promise<ChildResult> {
  const child = spawn(process.execPath, ["--import", "tsx", CHILD, mode, ...dirs], { cwd: REPO, stdio: ["ignore", "pipe", "pipe"] });
  onSpawn?.(child.pid!);
  let out = "";
  let err = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (err += d.toString()));
  return new Promise((resolve) => child.on("exit", (code, signal) => resolve({ code, signal, out, err })));
}

interface Seen {
  rebuilt: boolean;
  movedTo: string | null;
  /** The store's warn-or-worse log events. */
  events: LogEvent[];
}

/** Opens each of `dirs` in one child; it must exit normally and serve every message and the kv entry of each. */
async function expectServesAll(dirs: string[], what: string): Promise<Seen[]> {
  const r = await runChild("open", dirs);
  expect({ code: r.code, signal: r.signal }, `${what}: ${r.err}`).toEqual({ code: 0, signal: null });
  const lines = r.out.trim().split("\n");
  expect(lines).toHaveLength(dirs.length);
  return lines.map((line, i) => {
    const seen = JSON.parse(line) as Seen & { seqs: Record<string, number[]>; kv: string | null };
    for (const loc of INDEX_CHILD_STREAMS) expect(seen.seqs[loc], `${what} #${i}: ${loc}`).toEqual(expected);
    expect(seen.kv, `${what} #${i}`).toBe("kv value");
    return seen;
  });
}

const damages: Record<string, (file: string) => void> = {
  "truncated to half": (file) => fs.truncateSync(file, Math.floor(fs.statSync(file).size / 2)),
  "a garbage page in the middle": (file) => {
    const b = fs.readFileSync(file);
    const pages = b.byteLength / PAGE;
    const rand = mulberry32(7);
    const at = Math.floor(pages / 2) * PAGE;
    for (let i = 0; i < PAGE; i++) b[at + i] = Math.floor(rand() * 256);
    fs.writeFileSync(file, b);
  },
  "garbage in every page but the meta pages": (file) => {
    const b = fs.readFileSync(file);
    const rand = mulberry32(8);
    for (let i = 2 * PAGE; i < b.byteLength; i++) b[i] = Math.floor(rand() * 256);
    fs.writeFileSync(file, b);
  },
  "zero-length": (file) => fs.truncateSync(file, 0),
  "random bytes": (file) => {
    const rand = mulberry32(9);
    fs.writeFileSync(file, Buffer.from(Array.from({ length: fs.statSync(file).size }, () => Math.floor(rand() * 256))));
  },
};

describe("a damaged index file", () => {
  it("passes the check when healthy, after a clean close and after a process crash", async () => {
    expect(indexFileProblem(path.join(pristine, "index"))).toBeUndefined();
    const dir = copy();
    // A process crash: no checksum of a clean close, and the marker of this boot.
    fs.rmSync(path.join(dir, "index", "index.sum"));
    fs.writeFileSync(unsyncedMarkerPath(path.join(dir, "index")), JSON.stringify({ bootId: bootId() }));
    expect(indexFileProblem(path.join(dir, "index"))).toBeUndefined();
    const store = await Store.open({ dir, limits: INDEX_CHILD_LIMITS, sweepTimers: false });
    expect(store.recovery.rebuilt).toBe(false);
    expect((await all(store.stream("d/a").getAll())).length).toBe(MESSAGES);
    await store.close();
  });

  it("is detected, moved aside and rebuilt from the log when truncated, garbage, empty or random", async () => {
    const names = Object.keys(damages);
    const dirs = names.map(() => copy());
    const originals = dirs.map((dir, i) => {
      const original = fs.readFileSync(indexFile(dir));
      damages[names[i]!]!(indexFile(dir));
      expect(indexFileProblem(path.join(dir, "index")), names[i]).toBeDefined();
      return original;
    });
    const seen = await expectServesAll(dirs, names.join(", "));
    seen.forEach((s, i) => {
      const ctx = names[i];
      expect(s.rebuilt, ctx).toBe(true);
      expect(s.movedTo, ctx).toMatch(/index\.damaged-/);
      // The damaged file is kept for forensics.
      const kept = fs.readFileSync(path.join(s.movedTo!, "index.mdb"));
      expect(kept.byteLength === originals[i]!.byteLength && kept.equals(originals[i]!), ctx).toBe(false);
      expect(s.events.find((e) => e.event === "index_damaged"), ctx).toMatchObject({ movedTo: s.movedTo });
    });
    // The rebuilt indexes are healthy: the next open uses them as they are.
    for (const s of await expectServesAll(dirs, "reopened")) expect(s.rebuilt).toBe(false);
  }, 60_000);

  it("is detected by its meta pages alone after a process crash (no checksum of a clean close)", async () => {
    const names = ["truncated to half", "zero-length", "random bytes"];
    const dirs = names.map((name) => {
      const dir = copy();
      fs.rmSync(path.join(dir, "index", "index.sum"));
      fs.writeFileSync(unsyncedMarkerPath(path.join(dir, "index")), JSON.stringify({ bootId: bootId() }));
      damages[name]!(indexFile(dir));
      expect(indexFileProblem(path.join(dir, "index")), name).toBeDefined();
      return dir;
    });
    for (const s of await expectServesAll(dirs, names.join(", "))) expect(s.movedTo).toMatch(/index\.damaged-/);
  }, 60_000);
});

describe("strata reindex", () => {
  it("leaves the old index as it was when it fails, so the store still opens", async () => {
    const dir = copy();
    const ids = listSegmentIds(path.join(dir, "segments"));
    const indexBefore = fs.readFileSync(indexFile(dir));
    // A damaged header: the segment is not trusted at all, and the rebuild refuses it.
    const older = segmentPath(path.join(dir, "segments"), ids[1]!);
    const original = fs.readFileSync(older);
    const damaged = Buffer.from(original);
    damaged[3]! ^= 0xff;
    fs.writeFileSync(older, damaged);
    const err = await Store.reindex({ dir, limits: INDEX_CHILD_LIMITS }).catch((e: unknown) => e);
    expect(StrataError.is(err, "CORRUPT")).toBe(true);
    expect(fs.readFileSync(indexFile(dir)).equals(indexBefore)).toBe(true);
    expect(fs.existsSync(path.join(dir, "index.rebuild"))).toBe(false);
    const store = await Store.open({ dir, limits: INDEX_CHILD_LIMITS, sweepTimers: false });
    expect(store.recovery.rebuilt).toBe(false);
    expect(store.inventory("d/a")).toMatchObject({ count: MESSAGES, lastSeq: MESSAGES });
    expect((await store.stream("d/b").get(MESSAGES))!.value).toEqual(enc(`d/b message ${MESSAGES} `.repeat(3)));
    await store.close();
    fs.writeFileSync(older, original);
  });

  it("leaves a store that opens and serves everything when killed halfway", async () => {
    const dir = copy();
    let pid = 0;
    const rebuilding = path.join(dir, "index.rebuild", "index.mdb");
    const exit = runChild("reindex", [dir], (p) => (pid = p));
    // Kill it as soon as the new index exists: the replay into it is under way.
    const deadline = Date.now() + 20_000;
    let killed = false;
    while (Date.now() < deadline) {
      if (fs.existsSync(rebuilding)) {
        process.kill(pid, "SIGKILL");
        killed = true;
        break;
      }
      const done = await Promise.race([exit.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 1))]);
      if (done) break;
    }
    const r = await exit;
    expect(killed, `the reindex finished before it could be killed: ${r.out}${r.err}`).toBe(true);
    expect(r.signal).toBe("SIGKILL");
    expect(fs.existsSync(path.join(dir, "index.rebuild"))).toBe(true); // it was cut short
    const [seen] = await expectServesAll([dir], "after a killed reindex");
    expect(seen!.rebuilt).toBe(false); // the old index was untouched
    expect(fs.existsSync(path.join(dir, "index.rebuild"))).toBe(false); // the leftover is gone
  }, 30_000);
});

describe("moving a damaged index aside", () => {
  it("keeps every damaged copy, even two at the same clock value", () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), "strata-aside-"));
    try {
      const dir = path.join(root, "index");
      const now = Date.UTC(2026, 0, 1);
      const moved: string[] = [];
      for (const content of ["first", "second"]) {
        fs.mkdirSync(dir);
        fs.writeFileSync(path.join(dir, "data.mdb"), content);
        moved.push(moveIndexAside(dir, now));
      }
      expect(new Set(moved).size).toBe(2);
      expect(moved.map((m) => fs.readFileSync(path.join(m, "data.mdb"), "utf8"))).toEqual(["first", "second"]);
      expect(fs.existsSync(dir)).toBe(false);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});

/**
 * `strata stat --data DIR` (src/data-stat.ts, src/cli/stat.ts) and the moved-away quarantine it
 * lists (src/index/quarantine.ts): the figures match what the store itself knows, the quarantine
 * survives a restart and `strata reindex`, a location imported back leaves it, stat changes
 * nothing in the directory, and a directory in use, missing, empty or damaged is refused clearly.
 * Real stores over a directory tier; the CLI runs as a child process.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { open } from "lmdb";
import { afterEach, describe, expect, it } from "vitest";
import { formatStat } from "../../src/cli/stat.js";
import { dataStat, type DataStat } from "../../src/data-stat.js";
import { StrataError } from "../../src/errors.js";
import { deadBytesBySegment } from "../../src/index/dead-chunks.js";
import { INDEX_FILE, writeIndexSum } from "../../src/index/index-check.js";
import { listSegmentIds, segmentPath } from "../../src/log/segment-files.js";
import { Store } from "../../src/store.js";
import { copyLive } from "../helpers/copy-live.js";
import { LIMITS, World, bytes, enc, shipAll } from "../engine/takeover-helpers.js";

const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url));
const KiB = 1024;

let world: World;
afterEach(async () => {
  await world?.dispose();
});

async function statError(dir: string): Promise<StrataError> {
  const err = await dataStat(dir).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(StrataError.is(err)).toBe(true);
  return err as StrataError;
}

/** Runs `strata stat` in a child process. */
function cli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "stat", ...args], { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.once("error", reject);
    child.once("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

/** Every file under `dir` with its size and content hash (LMDB's reader-lock file left out). */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || entry.name.endsWith("-lock")) continue;
    const file = path.join(entry.parentPath, entry.name);
    const st = fs.statSync(file);
    out[path.relative(dir, file)] = `${st.size}:${st.mtimeMs}:${createHash("sha256").update(fs.readFileSync(file)).digest("hex")}`;
  }
  return out;
}

describe("strata stat: the figures", () => {
  it("match what the store knows: segments by state with bytes and dead bytes, locations by kind", async () => {
    world = new World();
    // A small cache: some uploaded segments are evicted.
    const s = await world.store("a", { cacheBytes: 96 * KiB });
    const expectedKinds = { stream: { locations: 0, entries: 0, bytes: 0 }, kv: { locations: 0, entries: 0, bytes: 0 } };
    for (let n = 0; n < 3; n++) {
      const st = s.stream(`acct/${n}/chat`);
      for (let i = 0; i < 20; i++) await st.append({ value: bytes(1000 + n, i) });
      await st.delete(3);
    }
    for (let n = 0; n < 2; n++) {
      const kv = s.kv(`acct/${n}/kv`);
      for (let round = 0; round < 3; round++) for (let k = 0; k < 10; k++) await kv.set(`k${k}`, bytes(700, round + k));
      await kv.delete("k0");
    }
    // A large value refused after its chunks were written: they are dead bytes.
    const refused = await s.kv("acct/0/kv").set("k1", bytes(10 * KiB, 9), { expectedRevision: 1 }).catch((e: unknown) => e);
    expect(StrataError.is(refused, "CONFLICT")).toBe(true);
    await s.stream("acct/9/tail").append({ value: enc("one more") });
    // Everything shipped: the close has nothing left to seal, so the states below are final.
    await shipAll(s);
    for (const loc of ["acct/0/chat", "acct/1/chat", "acct/2/chat", "acct/9/tail", "acct/0/kv", "acct/1/kv"]) {
      const inv = s.inventory(loc);
      const t = expectedKinds[inv.kind!];
      t.locations += 1;
      t.entries += inv.count;
      t.bytes += inv.bytes;
    }
    const states = new Map([...s.index.segs.getRange()].map(({ key, value }) => [key, value.state]));
    const dead = [...deadBytesBySegment(s.index).values()].reduce((a, b) => a + b, 0);
    expect(dead).toBeGreaterThanOrEqual(10 * KiB);
    await world.close(s);

    const stat = await dataStat(world.dir("a"));
    const segmentsDir = path.join(world.dir("a"), "segments");
    const local = listSegmentIds(segmentsDir);
    const size = (id: number) => fs.statSync(segmentPath(segmentsDir, id)).size;
    const active = local[local.length - 1]!;
    expect(stat.segments.active).toEqual({ count: 1, bytes: size(active), deadBytes: 0 });
    const uploaded = local.filter((id) => id !== active && states.get(id) === "uploaded");
    const evicted = [...states].filter(([, st]) => st === "evicted").map(([id]) => id);
    expect(uploaded.length).toBeGreaterThan(0);
    expect(evicted.length).toBeGreaterThan(0);
    expect(stat.segments.uploaded.count).toBe(uploaded.length);
    expect(stat.segments.uploaded.bytes).toBe(uploaded.reduce((a, id) => a + size(id), 0));
    expect(stat.segments.evicted).toMatchObject({ count: evicted.length, bytes: 0 });
    expect(stat.segments.sealed.count + stat.segments["local-only"].count + stat.segments.missing.count + stat.segments.damaged.count).toBe(0);
    expect(stat.segments.total.count).toBe(local.length + evicted.length);
    expect(stat.segments.total.bytes).toBe(local.reduce((a, id) => a + size(id), 0));
    expect(stat.segments.total.deadBytes).toBe(dead);
    expect(stat.locations.stream).toEqual(expectedKinds.stream);
    expect(stat.locations.kv).toEqual(expectedKinds.kv);
    expect(stat.locations.total.locations).toBe(6);
    expect(stat.index.closedCleanly).toBe(true);
    expect(stat.index.logBytesAfterCheckpoint).toBe(0);
    expect(stat.quarantine).toEqual([]);
    expect(stat.foreignLogs).toEqual([]);

    const text = formatStat(stat, { all: false });
    expect(text).toMatch(/uploaded\s+\d+\s+[\d,]+\s+[\d,]+/);
    expect(text).toMatch(new RegExp(`kv\\s+2\\s+${expectedKinds.kv.entries}\\s+${expectedKinds.kv.bytes.toLocaleString("en-US")}`));
  });

  it("counts the sealed segments of a store without a tier as local-only, and a crashed index as not closed cleanly", async () => {
    world = new World();
    const dir = world.dir("plain");
    const s = await Store.open({ dir, limits: LIMITS, sweepTimers: false });
    for (let i = 0; i < 40; i++) await s.stream("acct/p/s").append({ value: bytes(2000, i) });
    // A copy of the directory of a running store is what a kill -9 leaves behind.
    await s.index.flushed();
    const copy = path.join(world.root, "crashed");
    copyLive(dir, copy, (name) => name === "LOCK");
    await s.close();

    const stat = await dataStat(dir);
    const local = listSegmentIds(path.join(dir, "segments"));
    expect(local.length).toBeGreaterThan(2);
    expect(stat.segments["local-only"].count).toBe(local.length - 1);
    expect(stat.segments.active.count).toBe(1);
    expect(stat.locations.stream).toMatchObject({ locations: 1, entries: 40 });

    const crashed = await dataStat(copy);
    expect(crashed.index.closedCleanly).toBe(false);
    expect(formatStat(crashed, { all: false })).toContain("NOT closed cleanly");
  });
});

describe("the moved-away quarantine", () => {
  it("is kept in the index: listed by the store and by stat, updated when noted again, and survives a restart", async () => {
    world = new World();
    let s = await world.store("a");
    await s.stream("acct/q/one").append({ value: enc("x") });
    s.quarantine("acct/q/one", { movedTo: "b", records: 5, fromSegment: 3 });
    const first = s.quarantined();
    expect(first).toEqual([{ location: "acct/q/one", movedTo: "b", records: 5, fromSegment: 3, at: world.now }]);
    world.now += 1000;
    // Noted again (after a restart the count may be lower): the newest owner, the larger count, the earlier segment, the first time.
    s.quarantine("acct/q/one", { movedTo: "c", records: 2, fromSegment: 1 });
    s.quarantine("acct/q/two", { movedTo: "b", records: 1, fromSegment: 4 });
    const expected = [
      { location: "acct/q/one", movedTo: "c", records: 5, fromSegment: 1, at: world.now - 1000 },
      { location: "acct/q/two", movedTo: "b", records: 1, fromSegment: 4, at: world.now },
    ];
    expect(s.quarantined()).toEqual(expected);
    await world.close(s);

    const stat = await dataStat(world.dir("a"));
    expect(stat.quarantine).toEqual(expected);
    const text = formatStat(stat, { all: false });
    expect(text).toContain("quarantine (moved away with records never shipped; kept in the log, never served): 2 locations");
    expect(text).toMatch(/acct\/q\/one\s+c\s+5\s+1/);

    s = await world.store("a");
    expect(s.quarantined()).toEqual(expected);
    await world.close(s);
  });

  it("loses the entry of a location imported back (with a warning), and `strata reindex` keeps the others", async () => {
    world = new World();
    const b = await world.store("b");
    await b.stream("acct/r/back").append({ value: enc("written at b") });
    const cut = await shipAll(b);
    await world.close(b);

    let a = await world.store("a");
    await a.stream("acct/r/back").append({ value: enc("never shipped by a") });
    a.quarantine("acct/r/back", { movedTo: "b", records: 1, fromSegment: 1 });
    a.quarantine("acct/r/stays", { movedTo: "b", records: 2, fromSegment: 1 });
    await a.importLocations([{ location: "acct/r/back", from: "b", cut, epoch: 3 }]);
    expect(a.quarantined().map((q) => q.location)).toEqual(["acct/r/stays"]);
    expect(await world.log.waitFor("location_came_back")).toMatchObject({ location: "acct/r/back", from: "b", records: 1 });
    expect((await a.stream("acct/r/back").get(1))?.value).toEqual(enc("written at b"));
    await world.close(a);
    expect((await dataStat(world.dir("a"))).quarantine.map((q) => q.location)).toEqual(["acct/r/stays"]);

    // A rebuild from the log redoes the import; the entry it cannot derive from the log is carried over.
    await Store.reindex({ dir: world.dir("a"), id: "a", tier: world.tier, limits: LIMITS, sweepTimers: false, clock: () => world.now, logger: world.log.logger });
    const after = await dataStat(world.dir("a"));
    expect(after.quarantine).toEqual([{ location: "acct/r/stays", movedTo: "b", records: 2, fromSegment: 1, at: world.now }]);
    expect(after.foreignLogs).toEqual([{ log: 1, server: "b" }]);
    a = await world.store("a");
    expect(a.quarantined().map((q) => q.location)).toEqual(["acct/r/stays"]);
    await world.close(a);
  });

  it("opens in an index made before the table existed (no `quarantine`, no `logs`)", async () => {
    world = new World();
    const dir = world.dir("old");
    let s = await Store.open({ dir, limits: LIMITS, sweepTimers: false });
    await s.kv("acct/o/kv").set("k", enc("v"));
    await s.close();
    const indexDir = path.join(dir, "index");
    const root = open({ path: path.join(indexDir, INDEX_FILE), maxDbs: 16, noSubdir: true });
    for (const name of ["quarantine", "logs"]) root.openDB({ name }).dropSync();
    await root.close();
    writeIndexSum(indexDir);

    const stat = await dataStat(dir);
    expect(stat.quarantine).toEqual([]);
    expect(stat.foreignLogs).toEqual([]);
    expect(stat.locations.kv).toMatchObject({ locations: 1, entries: 1 });
    s = await Store.open({ dir, limits: LIMITS, sweepTimers: false });
    expect(s.quarantined()).toEqual([]);
    s.quarantine("acct/o/kv", { movedTo: "z", records: 1, fromSegment: 1 });
    expect(s.quarantined().map((q) => q.movedTo)).toEqual(["z"]);
    await s.close();
  });
});

describe("strata stat: the command", () => {
  it("prints a table, or JSON with --json, and changes nothing in the data directory", async () => {
    world = new World();
    const s = await world.store("a");
    await s.stream("acct/c/s").append({ value: enc("m") });
    await s.kv("acct/c/kv").set("k", enc("v"));
    s.quarantine("acct/c/s", { movedTo: "b", records: 1, fromSegment: 1 });
    await world.close(s);
    const dir = world.dir("a");
    const before = snapshot(dir);

    const json = await cli(["--data", dir, "--json"]);
    expect(json.stderr).toBe("");
    expect(json.code).toBe(0);
    const parsed = JSON.parse(json.stdout) as DataStat;
    expect(parsed).toEqual(await dataStat(dir));
    expect(parsed.quarantine[0]).toMatchObject({ location: "acct/c/s", movedTo: "b" });

    const human = await cli(["--data", dir]);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^segments$/m);
    expect(human.stdout).toMatch(/stream\s+1\s+1\s+1/);
    expect(human.stdout).toContain("acct/c/s");
    expect(snapshot(dir)).toEqual(before);
    expect(fs.existsSync(path.join(dir, "LOCK"))).toBe(false);
  });

  it("refuses a data directory a running store holds, and leaves that store's lock alone", async () => {
    world = new World();
    const s = await world.store("a");
    await s.stream("acct/u/s").append({ value: enc("m") });
    const dir = world.dir("a");

    const other = await cli(["--data", dir]);
    expect(other.code).toBe(1);
    expect(other.stdout).toBe("");
    expect(other.stderr).toContain(`strata: UNAVAILABLE: the data directory ${dir} is in use by process ${process.pid}`);
    expect(other.stderr).toContain("stop the server first");
    expect((await statError(dir)).code).toBe("UNAVAILABLE");
    expect(fs.readFileSync(path.join(dir, "LOCK"), "utf8")).toBe(String(process.pid));
    await s.stream("acct/u/s").append({ value: enc("still writable") });
    await world.close(s);
  });

  it("refuses a missing, empty or damaged data directory with a clear error, creating nothing", async () => {
    world = new World();
    const missing = path.join(world.root, "nope");
    const e1 = await statError(missing);
    expect(e1.code).toBe("INVALID_ARGUMENT");
    expect(e1.message).toContain(`there is no data directory at ${missing}`);
    expect(fs.existsSync(missing)).toBe(false);

    const empty = path.join(world.root, "empty");
    fs.mkdirSync(empty);
    const e2 = await statError(empty);
    expect(e2.code).toBe("INVALID_ARGUMENT");
    expect(e2.message).toContain("is not a Strata data directory");
    expect(fs.readdirSync(empty)).toEqual([]);

    const file = path.join(world.root, "a-file");
    fs.writeFileSync(file, "x");
    expect((await statError(file)).message).toContain("is not a directory");

    const s = await world.store("a");
    await s.stream("acct/d/s").append({ value: enc("m") });
    await world.close(s);
    const dir = world.dir("a");
    // Damage inside the index file: the checksum written at close no longer matches.
    const indexFile = path.join(dir, "index", INDEX_FILE);
    const buf = fs.readFileSync(indexFile);
    buf[buf.length - 100] = buf[buf.length - 100]! ^ 0xff;
    fs.writeFileSync(indexFile, buf);
    const e3 = await statError(dir);
    expect(e3.code).toBe("CORRUPT");
    expect(e3.message).toContain("strata reindex");
    fs.rmSync(path.join(dir, "index"), { recursive: true });
    const e4 = await statError(dir);
    expect(e4.code).toBe("CORRUPT");
    expect(e4.message).toContain("has segments but no index");
    expect(fs.existsSync(path.join(dir, "index"))).toBe(false);
    expect(fs.existsSync(path.join(dir, "LOCK"))).toBe(false);
  });
});

/**
 * `strata compact` (src/cli/compact.ts) and the server's compact request
 * (src/net/server/server-compact.ts): the CLI on a stopped server's data directory (with and
 * without a directory tier), as a child process where it matters (output, progress lines, exit
 * codes, the data lock) and in-process otherwise (a spawn costs seconds) — a dry run writes no segment, the JSON has
 * the report's shape, the data reads back whole, a second run reclaims nothing more, a restore
 * from the tier after it gives the same data — its refusals (a directory in use, flags that do
 * not go together, a tiered directory without its tier), and `--server` against a real
 * nats-server and a running server: the report, one compaction at a time, the named timeout,
 * bad requests.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { CompactReport } from "../../src/compact.js";
import { bytes, formatReport, plainLines, runCompact, type CompactFlags } from "../../src/cli/compact.js";
import { StrataError } from "../../src/errors.js";
import { Store } from "../../src/store.js";
import { preparedPath } from "../../src/log/segment-files.js";
import { compactSubject } from "../../src/net/wire/subjects.js";
import { decodeUntrusted, encode } from "../../src/net/wire/wire-codec.js";
import { errorOfReply } from "../../src/net/wire/wire-errors.js";
import { parseCompactReport } from "../../src/net/wire/compact-wire.js";
import { captureLogger } from "../helpers/capture-logger.js";
import { startStack, type Stack } from "../helpers/strata-stack.js";

const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url));
const KiB = 1024;
/** Small segments, so a few hundred KiB of writes make several sealed ones. */
const LIMITS = { chunkBytes: 16 * KiB, headersBytesMax: 8 * KiB, recordBytesMax: 32 * KiB, segmentBytesMax: 64 * KiB, blockBytes: 8 * KiB };
const KEYS = 20;
const ROUNDS = 15;

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `strata compact …` in a child process (stdout and stderr are pipes: not a terminal). */
function cli(args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "compact", ...args], { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    child.once("error", reject);
    child.once("exit", (code) => resolve({ code, stdout, stderr }));
  });
}

/** Runs the command in-process; resolves to what it printed (or rejects with its StrataError). */
async function inProcess(flags: CompactFlags): Promise<{ report: CompactReport; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  const report = await runCompact(flags, { out: (t) => (stdout += t), err: (t) => (stderr += t), tty: false });
  return { report, stdout, stderr };
}

async function refusal(flags: CompactFlags): Promise<StrataError> {
  const err = await inProcess(flags).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(StrataError.is(err), JSON.stringify(flags)).toBe(true);
  return err as StrataError;
}

/** The report a `--json` run printed (one JSON object on one line). */
function jsonOf(r: CliResult): CompactReport & { data?: string; server?: string } {
  expect(r.stderr).toBe("");
  expect(r.code).toBe(0);
  const lines = r.stdout.trim().split("\n");
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0]!) as CompactReport & { data?: string; server?: string };
}

/**
 * Every file under `dir` with its size, mtime and content hash, but the next segment's prepared
 * file (zeros, not a segment: an open whose segmentBytesMax it does not fill, as the CLI's default
 * limits here, removes it and prepares another when it needs one).
 */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const entry of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile() || entry.name === path.basename(preparedPath(dir))) continue;
    const file = path.join(entry.parentPath, entry.name);
    const st = fs.statSync(file);
    out[path.relative(dir, file)] = `${st.size}:${st.mtimeMs}:${createHash("sha256").update(fs.readFileSync(file)).digest("hex")}`;
  }
  return out;
}

const segmentBytes = (dir: string): number =>
  fs
    .readdirSync(path.join(dir, "segments"))
    .filter((n) => n.endsWith(".seg"))
    .reduce((a, n) => a + fs.statSync(path.join(dir, "segments", n)).size, 0);

/** A value that names its key and round, padded to ~1000 bytes. */
const valueOf = (key: number, round: number): Uint8Array => Buffer.from(`k${key} r${round} `.padEnd(1000, String.fromCharCode(97 + ((key + round) % 26))));

/** KEYS keys overwritten ROUNDS times, and a stream with some messages deleted. */
async function fill(store: Store): Promise<void> {
  const kv = store.kv("acct/a/kv");
  for (let round = 0; round < ROUNDS; round++) for (let k = 0; k < KEYS; k++) await kv.set(`k${k}`, valueOf(k, round));
  const s = store.stream("acct/a/chat");
  for (let i = 1; i <= 30; i++) await s.append({ value: valueOf(100, i) });
  for (let seq = 1; seq <= 10; seq++) await s.delete(seq);
}

/** The data `fill` left reads back exactly. */
async function expectFilled(store: Store): Promise<void> {
  const kv = store.kv("acct/a/kv");
  for (let k = 0; k < KEYS; k++) expect(Buffer.from((await kv.get(`k${k}`))!.value).equals(Buffer.from(valueOf(k, ROUNDS - 1)))).toBe(true);
  const s = store.stream("acct/a/chat");
  expect(await s.inventory()).toMatchObject({ count: 20, lastSeq: 30 });
  expect(await s.get(10)).toBeUndefined();
  expect(Buffer.from((await s.get(11))!.value).equals(Buffer.from(valueOf(100, 11)))).toBe(true);
}

function expectReportShape(r: CompactReport): void {
  for (const k of ["runs", "segmentsBefore", "segmentsAfter", "localBytesBefore", "localBytesAfter", "droppedBytes", "keptRecords", "reclaimedSegments", "ms"] as const) {
    expect(typeof r[k], k).toBe("number");
    expect(r[k], k).toBeGreaterThanOrEqual(0);
  }
  expect(typeof r.dryRun).toBe("boolean");
  expect(Object.keys(r.dropped).sort()).toEqual(["chunks", "config", "deleted", "expired", "overwritten"]);
}

const scratch: string[] = [];
afterAll(() => {
  for (const d of scratch.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});
function tempDir(name: string): string {
  const d = fs.mkdtempSync(path.join(fs.realpathSync(process.env.TMPDIR ?? "/tmp"), `strata-compact-${name}-`));
  scratch.push(d);
  return d;
}

describe("strata compact --data DIR", () => {
  it("a dry run writes no segment; then it compacts, the data reads back, and a second run reclaims nothing more", async () => {
    const dir = tempDir("plain");
    let store = await Store.open({ dir, limits: LIMITS, sweepTimers: false, compaction: false });
    await fill(store);
    await store.close();
    const segmentsBefore = snapshot(path.join(dir, "segments"));
    const bytesBefore = segmentBytes(dir);

    const dry = jsonOf(await cli(["--data", dir, "--dry-run", "--json"]));
    expectReportShape(dry);
    expect(dry).toMatchObject({ dryRun: true, data: dir, reclaimedSegments: 0 });
    expect(dry.runs).toBeGreaterThan(0);
    expect(dry.droppedBytes).toBeGreaterThan(0);
    // A dry run does not seal the last segment (that would write one), so it leaves that one out.
    expect(dry.dropped.overwritten).toBeGreaterThan(0);
    expect(dry.dropped.overwritten).toBeLessThanOrEqual(KEYS * (ROUNDS - 1));
    expect(dry.localBytesAfter).toBeLessThan(dry.localBytesBefore);
    // Not a byte of the log changed (opening the store rewrites only the index's bookkeeping).
    expect(snapshot(path.join(dir, "segments"))).toEqual(segmentsBefore);

    const real = await cli(["--data", dir]);
    expect(real.code).toBe(0);
    expect(real.stdout).toMatch(/^compacted data directory /);
    expect(real.stdout).toMatch(/dropped +\d[\d,]* records/);
    expect(real.stdout).toMatch(new RegExp(`${KEYS * (ROUNDS - 1)} overwritten, 10 deleted`));
    // Not a terminal: plain progress lines, no bar (no carriage returns).
    expect(real.stderr).toMatch(/^(scan|write|switch|reclaim): /m);
    expect(real.stderr).not.toContain("\r");
    const bytesAfter = segmentBytes(dir);
    expect(bytesAfter).toBeLessThan(bytesBefore / 4);

    const second = await inProcess({ data: dir, json: true });
    expect(second.stderr).toBe("");
    const again = JSON.parse(second.stdout) as CompactReport;
    expect(again).toEqual({ ...second.report, data: dir });
    expectReportShape(again);
    expect(again).toMatchObject({ dryRun: false, runs: 0, droppedBytes: 0, reclaimedSegments: 0 });
    expect(again.localBytesAfter).toBe(again.localBytesBefore);
    expect(segmentBytes(dir)).toBe(bytesAfter);

    store = await Store.open({ dir, limits: LIMITS, sweepTimers: false, compaction: false });
    try {
      await expectFilled(store);
    } finally {
      await store.close();
    }
  });

  it("with a directory tier: the object store shrinks too, and a restore from it on an empty disk gives the same data", async () => {
    const root = tempDir("tier");
    const dir = path.join(root, "data");
    const tier = `dir:${path.join(root, "tier")}`;
    let store = await Store.open({ dir, id: "t1", tier, limits: LIMITS, sweepTimers: false, compaction: false });
    await fill(store);
    await store.sealActive();
    await store.tier!.drained();
    await store.close();

    // Its segments are in the object store: without the tier it is refused.
    const without = await refusal({ data: dir });
    expect(without.code).toBe("INVALID_ARGUMENT");
    expect(without.message).toMatch(/cold tier.*--tier/);

    const { report: r } = await inProcess({ data: dir, tier, id: "t1", json: true });
    expectReportShape(r);
    expect(r.objectBytesBefore).toBeGreaterThan(0);
    expect(r.objectBytesAfter).toBeLessThan(r.objectBytesBefore! / 2);
    expect(r.reclaimedSegments).toBeGreaterThan(0);

    store = await Store.open({ dir: path.join(root, "restored"), id: "t1", tier, limits: LIMITS, sweepTimers: false, compaction: false });
    try {
      expect(store.recovery.localIds).toEqual([]);
      await expectFilled(store);
    } finally {
      await store.close();
    }
  });

  it("refuses a directory a running process holds, and flags that do not go together", async () => {
    const dir = tempDir("busy");
    const store = await Store.open({ dir, sweepTimers: false, compaction: false });
    try {
      await store.kv("a/b").set("k", valueOf(1, 1));
      const busy = await cli(["--data", dir]);
      expect(busy.code).toBe(1);
      expect(busy.stderr).toContain(`UNAVAILABLE: the data directory ${dir} is in use by process ${process.pid}`);
    } finally {
      await store.close();
    }
    const cases: Array<[CompactFlags, RegExp]> = [
      [{}, /needs --data DIR .* or --server ID --nats URL/],
      [{ data: dir, tier: "dir:/tmp/x" }, /--tier and --id go together/],
      [{ data: dir, nats: "nats://127.0.0.1:1" }, /--nats go with --server/],
      [{ data: dir, server: "s1", nats: "nats://127.0.0.1:1" }, /use either --data DIR .* or --server ID .*, not both/],
      [{ server: "s1", id: "x", nats: "nats://127.0.0.1:1" }, /--id go with --data/],
      [{ server: "s1" }, /--server needs --nats/],
      [{ server: "s1", nats: "nats://127.0.0.1:1", timeoutMs: "soon" }, /--timeout-ms must be a positive integer/],
      [{ data: path.join(dir, "missing") }, /there is no data directory at/],
    ];
    for (const [flags, message] of cases) {
      const err = await refusal(flags);
      expect(err.code, JSON.stringify(flags)).toBe("INVALID_ARGUMENT");
      expect(err.message, JSON.stringify(flags)).toMatch(message);
    }
    expect(fs.existsSync(path.join(dir, "missing"))).toBe(false);
  });
});

describe("strata compact --server ID", () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ id: "s1", store: { limits: LIMITS, sweepTimers: false, compaction: false } });
    await fill(stack.store);
  });
  afterAll(async () => {
    await stack?.stop();
  });

  it("asks the running server, which compacts (a dry run first) and answers its report", async () => {
    const segments = path.join(stack.dir, "store", "segments");
    const files = snapshot(segments);
    const dry = await inProcess({ server: "s1", nats: stack.nats.url, dryRun: true, json: true });
    expect(JSON.parse(dry.stdout)).toEqual({ server: "s1", ...dry.report });
    expectReportShape(dry.report);
    expect(dry.report).toMatchObject({ dryRun: true, reclaimedSegments: 0 });
    expect(dry.report.droppedBytes).toBeGreaterThan(0);
    expect(snapshot(segments)).toEqual(files);

    const human = await cli(["--server", "s1", "--nats", stack.nats.url]);
    expect(human.code).toBe(0);
    expect(human.stderr).toBe("server s1 is compacting; waiting for its report\n");
    expect(human.stdout).toMatch(/^compacted server s1\n/);
    expect(human.stdout).toMatch(new RegExp(`${KEYS * (ROUNDS - 1)} overwritten, 10 deleted`));
    // The inputs wait out compactRetainMs (readers in flight) before they are deleted; they are superseded now.
    const states = [...stack.store.index.segs.getRange({})].map(({ value }) => value.state);
    expect(states.filter((st) => st === "superseded").length).toBeGreaterThan(1);
    await expectFilled(stack.store);
  });

  it("runs one requested compaction at a time; a second request is refused while it runs", async () => {
    const kv = stack.store.kv("acct/a/kv");
    for (let round = 0; round < ROUNDS; round++) for (let k = 0; k < KEYS; k++) await kv.set(`k${k}`, valueOf(k, round));
    const subject = compactSubject("strata", "s1");
    // Sent back to back: the second arrives while the first is running.
    const [first, second] = await Promise.all([stack.nc.request(subject, encode({}), { timeout: 30_000 }), stack.nc.request(subject, encode({}), { timeout: 30_000 })]);
    const outcomes = [first, second].map((m) => errorOfReply(m, () => "s1") ?? parseCompactReport(decodeUntrusted(m.data, "reply"), "reply"));
    const refused = outcomes.filter((o) => o instanceof Error);
    expect(refused).toHaveLength(1);
    expect((refused[0] as Error).message).toMatch(/already compacting/);
    expect((outcomes.find((o) => !(o instanceof Error)) as CompactReport).droppedBytes).toBeGreaterThan(0);
    await expectFilled(stack.store);
  });

  it("refuses a bad request body with INVALID_ARGUMENT", async () => {
    const subject = compactSubject("strata", "s1");
    for (const body of [{ dryRun: "yes" }, { dryRun: true, all: false }, [1, 2]]) {
      const m = await stack.nc.request(subject, encode(body), { timeout: 5000 });
      expect(errorOfReply(m, () => "s1")?.code).toBe("INVALID_ARGUMENT");
    }
    const empty = await stack.nc.request(subject, new Uint8Array(0), { timeout: 5000 });
    expect(errorOfReply(empty, () => "s1")?.code).toBe("INVALID_ARGUMENT");
  });

  it("a server nobody runs gives a clear error", async () => {
    const err = await refusal({ server: "nobody", nats: stack.nats.url });
    expect(err.code).toBe("UNAVAILABLE");
    expect(err.message).toMatch(/^no server "nobody" listens on strata.s.nobody.compact/);
  });
});

describe("the compact request's timeout (compactRequestMs)", () => {
  let stack: Stack | undefined;
  afterEach(async () => {
    await stack?.stop();
    stack = undefined;
  });

  it("answers TIMEOUT after compactRequestMs; the compaction goes on and holds the slot until it ends", async () => {
    const { logger, warnings, find } = captureLogger();
    // A slow compaction: a low I/O rate for the few hundred KiB to rewrite.
    stack = await startStack({
      id: "s2",
      store: { limits: { ...LIMITS, compactRateBytesPerSec: 256 * KiB }, sweepTimers: false, compaction: false },
      server: { limits: { compactRequestMs: 50 }, logger },
    });
    await fill(stack.store);
    const subject = compactSubject("strata", "s2");
    const first = await stack.nc.request(subject, encode({}), { timeout: 10_000 });
    expect(errorOfReply(first, () => "s2")?.code).toBe("TIMEOUT");
    expect(errorOfReply(first, () => "s2")?.message).toMatch(/compactRequestMs \(50 ms\); it goes on/);
    const second = await stack.nc.request(subject, encode({}), { timeout: 10_000 });
    expect(errorOfReply(second, () => "s2")?.message).toMatch(/already compacting/);
    // Its outcome reaches the server's log once it ends, and the slot is free again.
    const deadline = Date.now() + 20_000;
    while (!warnings.some((w) => w.includes("finished after its request timed out"))) {
      if (Date.now() > deadline) throw new Error(`the timed-out compaction did not end: ${warnings.join("; ")}`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect(find("compaction_finished_late")).toMatchObject({ level: 40, runs: expect.any(Number), droppedBytes: expect.any(Number), reclaimedSegments: expect.any(Number) });
    const third = await stack.nc.request(subject, encode({ dryRun: true }), { timeout: 10_000 });
    expect(errorOfReply(third, () => "s2")).toBeUndefined();
    await expectFilled(stack.store);
  });
});

describe("the summary and progress lines", () => {
  const report: CompactReport = {
    dryRun: false,
    runs: 2,
    segmentsBefore: 12,
    segmentsAfter: 3,
    localBytesBefore: 12 * 1024 * 1024,
    localBytesAfter: 1024 * 1024,
    objectBytesBefore: 10 * 1024 * 1024,
    objectBytesAfter: 900 * 1024,
    dropped: { overwritten: 11_000, deleted: 5, expired: 1, chunks: 2, config: 0 },
    droppedBytes: 11 * 1024 * 1024,
    keptRecords: 1000,
    reclaimedSegments: 11,
    ms: 1234,
  };

  it("shows before and after, locally and in the object store, drops by reason, reclaimed segments and time", () => {
    const text = formatReport(report, { server: "s1" });
    expect(text).toBe(
      [
        "compacted server s1",
        "  segments      12 -> 3",
        "  local bytes   12.0 MiB -> 1.00 MiB (-91.7%)",
        "  object store  10.0 MiB -> 900.0 KiB (-91.2%)",
        "  dropped       11,008 records, 11.0 MiB",
        "    by reason   11,000 overwritten, 5 deleted, 1 expired, 2 chunks, 0 old configs",
        "  kept          1,000 records",
        "  reclaimed     11 segments deleted",
        "  time          1.23 s, 2 runs",
        "",
      ].join("\n"),
    );
    const dry = formatReport({ ...report, dryRun: true, objectBytesBefore: undefined, objectBytesAfter: undefined, reclaimedSegments: 0 }, { data: "/d" });
    expect(dry).toMatch(/^dry run on data directory \/d: nothing was written/);
    expect(dry).not.toContain("object store");
    expect(dry).toContain("would drop");
    expect(dry).toContain("nothing (dry run)");
    expect(bytes(1023)).toBe("1023 B");
  });

  it("plain lines: one when a phase starts, then at most one a second, and where each phase ended", () => {
    const lines: string[] = [];
    let now = 0;
    const sink = plainLines((l) => lines.push(l), () => now);
    for (let done = 0; done <= 100; done += 10) {
      sink.update({ phase: "write", bytesDone: done * 1024, bytesTotal: 100 * 1024, segment: 3 });
      now += 150;
    }
    sink.update({ phase: "switch", bytesDone: 0, bytesTotal: 0 });
    sink.stop();
    expect(lines).toEqual([
      "write: 0% 0 B of 100.0 KiB (segment 3)",
      "write: 70% 70.0 KiB of 100.0 KiB (segment 3)",
      "write: 100% 100.0 KiB of 100.0 KiB (segment 3)",
      "switch: 0 B of 0 B",
    ]);
  });
});

/**
 * The harness of the seeded fault-injection test (fault-injection.test.ts): one Store driven
 * through the model workload of ./workload.ts while faults are injected, and the checker that
 * holds it to the model of ./model.ts after every step.
 *
 * What the checker holds (the promises of the README, under faults):
 * - Every write acknowledged OK is readable with its exact bytes, after any faults and reopens,
 *   and its result (seq, revision, timestamp) is what the model decides from the acknowledged
 *   writes alone.
 * - A write answered with an error (IO, UNAVAILABLE, …) never appears, not after a reopen either.
 * - A write in flight when a crash hit may appear or not, but the writes in flight appear as a
 *   prefix of their commit order (atomically per write, consistently with the model).
 * - Reads never return a wrong value. The one exception to "everything acknowledged is there" is
 *   a record this harness destroyed itself by flipping a byte: a read of it answers CORRUPT or
 *   nothing, and nothing else is lost because of it.
 * - Faults are StrataErrors: anything else thrown is a failure, and so is a store that still
 *   fails writes once the disk fault is gone (IO is retryable, no reopen needed).
 * Faults that could kill the process (a damaged index file) and real crashes (in a reindex) run
 * in a child process (./fault-child.ts), whose death by a signal is a failure.
 */
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "vitest";
import { captureLogger } from "../helpers/capture-logger.js";
import { StrataError } from "../../src/errors.js";
import { unsyncedMarkerPath } from "../../src/index/unsynced-marker.js";
import { parseFrame } from "../../src/log/framing.js";
import { decodeRecord } from "../../src/log/record.js";
import { SEGMENT_HEADER_BYTES, listSegmentIds, segmentPath } from "../../src/log/segment-files.js";
import { mulberry32 } from "../../src/random.js";
import { Store } from "../../src/store.js";
import { FaultIo, type FaultCode } from "../../src/testing/fault-io.js";
import { FaultyObjectStore, ForwardingObjectStore, MemoryObjectStore } from "../../src/testing/fault-store.js";
import type { ByteRange, CreateOnly, ObjectInfo, ObjectStore, PutIfAbsentResult } from "../../src/tier/object-store.js";
import type { ChildJob } from "./fault-child.js";
import { Model, type Outcome } from "./model.js";
import { applyToModel, applyToStore, concretize, type ConcreteOp, type WriteOp } from "./workload.js";

export const STREAMS = ["s/0", "s/1", "s/2", "s/3", "s/4", "s/5"] as const;
export const KVS = ["k/0", "k/1", "k/2", "k/3", "k/4", "k/5"] as const;
export const KEYS = ["a", "b", "c", "d.e", "f/g"] as const;
const ALL_LOCS = [...STREAMS, ...KVS];
export const LIMITS = {
  chunkBytes: 256,
  recordBytesMax: 8192,
  headersBytesMax: 1024,
  segmentBytesMax: 16384,
  commitBatchBytesMax: 8192,
  scanPageSize: 3,
  dedupWindowMs: 60_000,
};
const TIER_LIMITS = { sealIntervalMs: 40, uploadRetryMaxMs: 100, closeUploadWaitMs: 2000, objectAckTimeoutMs: 2000 };

const CHILD = fileURLToPath(new URL("./fault-child.ts", import.meta.url));
const REPO = fileURLToPath(new URL("../..", import.meta.url));

export type FaultStep =
  | { t: "write"; op: WriteOp }
  | { t: "group"; ops: WriteOp[] }
  | { t: "tick"; ms: number }
  | { t: "sweep" }
  | { t: "reopen" }
  | { t: "diskFault"; on: "write" | "fsync" | "tear"; code: FaultCode; count: number; ops: WriteOp[] }
  | { t: "crash"; after: number; power: boolean; keep: number; ops: WriteOp[] }
  | { t: "flip"; where: "tail" | "middle" | "old"; pick: number }
  | { t: "loseIndex" }
  | { t: "damageIndex"; mode: "truncate" | "garbage"; pick: number }
  | { t: "reindex"; crashAt: number | undefined }
  | { t: "restore"; crashAt: number | undefined; checkpoint: boolean };

/** A record destroyed by a flip: a read of it may answer CORRUPT or nothing, never a value. */
interface Destroyed {
  loc: string;
  seq?: number;
  key?: string;
  rev: number;
}

/** Error codes a write may get while a disk fault is armed (the fault itself, or a full queue). */
const DISK_FAULT_CODES = new Set(["IO", "UNAVAILABLE"]);

/** An object store shared by every incarnation of a store: closing a wrapper does not close it. */
class SharedObjectStore extends ForwardingObjectStore {
  override async close(): Promise<void> {}
}

export class FaultHarness {
  store!: Store;
  model: Model;
  io!: FaultIo;
  objects: FaultyObjectStore | undefined;
  private readonly memory: MemoryObjectStore | undefined;
  private now = 1_700_000_000_000;
  private readonly random: () => number;
  private readonly destroyed: Destroyed[] = [];
  /** Locations holding a destroyed record: no more writes go there (its seqs are in doubt). */
  readonly tainted = new Set<string>();
  /** What happened, for the failure message. */
  readonly log: string[] = [];
  /** What the stores logged at warn or worse (the messages: the failure message shows the last ones). */
  private readonly capture = captureLogger({ level: "warn" });
  readonly warnings = this.capture.warnings;
  /** Findings that are not failures (e.g. a stale value after a damaged record), printed at the end. */
  readonly notes: string[] = [];
  /** What was exercised (step kinds, faults injected, outcomes), so a run that tests nothing shows. */
  readonly stats = new Map<string, number>();

  constructor(
    readonly dir: string,
    seed: number,
    readonly tiered: boolean,
  ) {
    this.random = mulberry32(seed);
    this.model = new Model(LIMITS.dedupWindowMs, this.now);
    if (tiered) this.memory = new MemoryObjectStore();
  }

  private seed(): number {
    return Math.floor(this.random() * 2 ** 31);
  }

  /** Opens the store on fresh fault I/O (and a fresh fault-injecting view of the object store). */
  async open(objectCallsBeforeOutage?: number): Promise<void> {
    this.io = new FaultIo({ seed: this.seed() });
    const options = {
      dir: this.dir,
      limits: this.tiered ? { ...LIMITS, ...TIER_LIMITS } : LIMITS,
      clock: () => this.now,
      sweepTimers: false,
      logger: this.capture.logger,
      io: this.io,
    };
    if (!this.memory) {
      this.store = await Store.open(options);
      return;
    }
    // A flaky object store: some calls fail, some writes fail after they were applied.
    this.objects = new FaultyObjectStore(new SharedObjectStore(this.memory), { seed: this.seed(), putFailRate: 0.1, getFailRate: 0.05, failAfterApplyRate: 0.5 });
    if (objectCallsBeforeOutage !== undefined) {
      const countdown = new OutageAfter(this.objects, objectCallsBeforeOutage);
      this.store = await Store.open({ ...options, id: "f1", objectStore: countdown });
      return;
    }
    // The object store is flaky: an open that finds it unreachable is retried, as an operator would.
    for (let attempt = 1; ; attempt++) {
      try {
        this.store = await Store.open({ ...options, id: "f1", objectStore: this.objects });
        return;
      } catch (err) {
        if (!StrataError.is(err, "UNAVAILABLE") || attempt >= 20) throw err;
        this.objects = new FaultyObjectStore(new SharedObjectStore(this.memory), { seed: this.seed(), putFailRate: 0.1, getFailRate: 0.05, failAfterApplyRate: 0.5 });
      }
    }
  }

  /** Closes the store, and if that fails (a crashed disk), closes what it can and lets go of the directory. */
  private async abandon(): Promise<void> {
    const s = this.store;
    try {
      await s.close();
    } catch (err) {
      this.log.push(`  close after the crash failed: ${(err as Error).message}`);
      // A crashed process leaves its index as the page cache has it; close it so it can reopen.
      await s.index.close().catch(() => undefined);
    }
  }

  count(what: string, n = 1): void {
    this.stats.set(what, (this.stats.get(what) ?? 0) + n);
  }

  async step(step: FaultStep): Promise<void> {
    this.log.push(describe(step));
    if (process.env.STRATA_FAULT_TRACE) console.log(`${this.dir}: ${describe(step).slice(0, 300)}`);
    this.count(`step ${step.t}`);
    switch (step.t) {
      case "write":
        return this.writes([step.op], "normal");
      case "group":
        return this.writes(step.ops, "normal");
      case "tick":
        this.now += step.ms;
        this.model.now = this.now;
        return;
      case "sweep": {
        const expected = this.model.sweep();
        const got = await this.store.sweep();
        expectEq(got.expired, expected, "keys expired by the sweep");
        return;
      }
      case "reopen":
        await this.store.close();
        return this.open();
      case "diskFault":
        return this.diskFault(step);
      case "crash":
        return this.crash(step);
      case "flip":
        return this.flip(step.where, step.pick);
      case "loseIndex":
        await this.store.close();
        fs.rmSync(path.join(this.dir, "index"), { recursive: true, force: true });
        return this.open();
      case "damageIndex":
        return this.damageIndex(step.mode, step.pick);
      case "reindex":
        return this.reindex(step.crashAt);
      case "restore":
        return this.restore(step.crashAt, step.checkpoint);
    }
  }

  /**
   * Issues writes together and holds their outcomes to the model. `concrete` resolves conditions
   * on a speculative copy of the model (as if every write succeeded); the real model then takes
   * only the writes the store acknowledged, in order, and must decide each exactly as the store did.
   */
  private async writes(ops: WriteOp[], mode: "normal" | "fault"): Promise<void> {
    const concrete = this.concretize(ops);
    const results = await Promise.all(concrete.map((c) => applyToStore(this.store, c)));
    results.forEach((r, i) => this.settle(concrete[i]!, r, mode, i));
  }

  private concretize(ops: WriteOp[]): ConcreteOp[] {
    const spec = this.model.clone();
    return ops
      .filter((op) => !this.tainted.has(op.loc))
      .map((op) => {
        const c = concretize(op, spec);
        applyToModel(spec, c);
        return c;
      });
  }

  private settle(op: ConcreteOp, got: Outcome, mode: "normal" | "fault", i: number): void {
    this.count(`write ${mode} ${got.ok ? "ok" : got.code}`);
    if (!got.ok && DISK_FAULT_CODES.has(got.code)) {
      if (mode === "normal") {
        throw new Error(`write ${i} (${op.t} ${op.loc}) failed with ${got.code} although no fault was armed: the store did not recover from the last fault without a restart`);
      }
      return; // answered with an error: it must never appear, so the model does not take it
    }
    const want = applyToModel(this.model, op);
    expectEq(got, want, `outcome of write ${i} (${op.t} ${op.loc})`);
  }

  /** A full or failing disk for a few calls: errors allowed, then the store must work again at once. */
  private async diskFault(step: Extract<FaultStep, { t: "diskFault" }>): Promise<void> {
    if (step.on === "tear") this.io.tearNext(step.count, step.code);
    else this.io.failNext(step.on, step.count, step.code);
    await this.writes(step.ops, "fault");
    // Reads keep working while the disk is failing.
    await this.check("reads while the disk fault is armed");
    this.count("disk faults injected", this.io.injected);
    this.io.clear();
    // The disk has space again: the very next write must succeed, without a reopen.
    const loc = STREAMS.find((l) => !this.tainted.has(l) && this.model.locs.get(l)?.kind !== "kv");
    if (loc !== undefined) await this.writes([{ t: "append", loc, value: Uint8Array.of(0xfa), cond: "none" }], "normal");
  }

  /**
   * A crash at a chosen point: the disk fails every call from the `after`-th on, the writes in
   * flight get whatever answer (none is trusted, as a dead process sends none), the store is
   * abandoned and opened again; with `power`, what was not fsync'd is lost and the index (never
   * fsync'd while open) is damaged and marked as from another boot.
   */
  private async crash(step: Extract<FaultStep, { t: "crash" }>): Promise<void> {
    const concrete = this.concretize(step.ops);
    this.io.crashAfter(step.after);
    const results = await Promise.all(concrete.map((c) => applyToStore(this.store, c)));
    this.log.push(`  in flight: ${results.map((r) => (r.ok ? "ok" : r.code)).join(",")}`);
    this.io.crashed = true;
    this.objects?.setOffline(true);
    await this.abandon();
    if (step.power) {
      this.io.powerLoss(step.keep / 100);
      const file = path.join(this.dir, "index", "index.mdb");
      if (fs.existsSync(file)) fs.truncateSync(file, Math.floor((fs.statSync(file).size * step.keep) / 100));
      fs.writeFileSync(unsyncedMarkerPath(path.join(this.dir, "index")), JSON.stringify({ bootId: "before-the-power-cut" }));
    }
    await this.open();
    await this.resolveInFlight(concrete);
  }

  /** Finds how many of the writes in flight at a crash survived: some prefix must match exactly. */
  private async resolveInFlight(concrete: ConcreteOp[]): Promise<void> {
    const tried: string[] = [];
    for (let k = concrete.length; k >= 0; k--) {
      const candidate = this.model.clone();
      concrete.slice(0, k).forEach((c) => applyToModel(candidate, c));
      const diffs = await this.diff(candidate);
      if (diffs.length === 0) {
        this.model = candidate;
        this.log.push(`  ${k} of ${concrete.length} writes in flight survived`);
        this.count(k === concrete.length ? "crash: all in flight survived" : k === 0 ? "crash: none in flight survived" : "crash: some in flight survived");
        return;
      }
      tried.push(`prefix ${k}: ${diffs.slice(0, 3).join("; ")}`);
    }
    throw new Error(`after the crash the store matches no prefix of the ${concrete.length} writes in flight (acknowledged data lost, or a write applied partly or out of order):\n${tried.join("\n")}`);
  }

  /**
   * Flips one byte of a record whose value is current in the model (so losing it is visible), in
   * the last segment's last record ("tail"), in the middle of the last segment, or in an older
   * segment, with the store closed; its location takes no more writes.
   */
  private async flip(where: "tail" | "middle" | "old", pick: number): Promise<void> {
    await this.store.close();
    const segDir = path.join(this.dir, "segments");
    const ids = listSegmentIds(segDir).filter((id) => fs.statSync(segmentPath(segDir, id)).size > SEGMENT_HEADER_BYTES);
    const last = ids[ids.length - 1];
    const seg = where === "old" ? ids.slice(0, -1)[pick % Math.max(1, ids.length - 1)] : last;
    const records = seg === undefined ? [] : this.currentRecords(segmentPath(segDir, seg));
    let target: (typeof records)[number] | undefined;
    if (where === "tail") target = records.length > 0 && records[records.length - 1]!.isLastInFile ? records[records.length - 1] : undefined;
    else if (where === "middle") {
      const inner = records.filter((r) => !r.isLastInFile);
      target = inner[pick % Math.max(1, inner.length)];
    }
    else target = records[pick % Math.max(1, records.length)];
    if (target === undefined || seg === undefined) {
      this.log.push("  (no current record to flip there)");
      return this.open();
    }
    const file = segmentPath(segDir, seg);
    const bytes = fs.readFileSync(file);
    const at = target.off + (Math.floor(pick / 7) % target.len);
    bytes[at] = bytes[at]! ^ (1 + (pick % 255));
    fs.writeFileSync(file, bytes);
    this.destroyed.push(target.d);
    this.tainted.add(target.d.loc);
    this.count(`flip ${where} done`);
    this.log.push(`  flipped segment ${seg} offset ${at} in the record of ${JSON.stringify(target.d)} at ${target.off}`);
    await this.open();
  }

  /** Records of a segment file that hold a value the model says is current. */
  private currentRecords(file: string): Array<{ off: number; len: number; isLastInFile: boolean; d: Destroyed }> {
    const buf = fs.readFileSync(file);
    const out: Array<{ off: number; len: number; isLastInFile: boolean; d: Destroyed }> = [];
    let off = SEGMENT_HEADER_BYTES;
    while (off < buf.byteLength) {
      const parsed = parseFrame(buf, off, LIMITS.recordBytesMax);
      if (parsed.kind !== "ok") break; // damage from an earlier flip: nothing after it is targeted
      const rec = decodeRecord(parsed.body);
      const isLastInFile = parsed.next === buf.byteLength;
      const l = rec.t === "sset" || rec.t === "kset" ? this.model.locs.get(rec.loc) : undefined;
      if (l && (rec.t === "sset" || rec.t === "kset") && !this.tainted.has(rec.loc)) {
        if (rec.t === "sset" && l.msgs.get(rec.seq)?.revision === rec.rev) out.push({ off, len: parsed.next - off, isLastInFile, d: { loc: rec.loc, seq: rec.seq, rev: rec.rev } });
        if (rec.t === "kset" && l.kv.get(rec.key)?.revision === rec.rev) out.push({ off, len: parsed.next - off, isLastInFile, d: { loc: rec.loc, key: rec.key, rev: rec.rev } });
      }
      off = parsed.next;
    }
    return out;
  }

  /** Damages index.mdb of a cleanly closed store; a child process must open it without dying. */
  private async damageIndex(mode: "truncate" | "garbage", pick: number): Promise<void> {
    await this.store.close();
    const file = path.join(this.dir, "index", "index.mdb");
    const size = fs.statSync(file).size;
    if (mode === "truncate") fs.truncateSync(file, Math.floor(size / 2));
    else {
      const page = 4096;
      const pages = Math.max(1, Math.floor(size / page));
      const at = (pick % pages) * page;
      const garbage = Buffer.from(Array.from({ length: Math.min(page, size - at) }, (_, i) => (pick * 131 + i * 29) & 0xff));
      const fd = fs.openSync(file, "r+");
      fs.writeSync(fd, garbage, 0, garbage.byteLength, at);
      fs.closeSync(fd);
    }
    const result = this.child({ mode: "open", dir: this.dir, limits: LIMITS, now: this.now });
    if (result.signal !== null || result.status !== 0) {
      throw new Error(`opening a store with a damaged index (${mode}) ${result.signal ? `killed the process with ${result.signal}` : `failed (exit ${result.status}): ${result.stdout}${result.stderr}`}; it must be detected and rebuilt`);
    }
    await this.open();
  }

  /** `strata reindex`, whole or cut short by a real crash at a chosen file-system call. */
  private async reindex(crashAt: number | undefined): Promise<void> {
    await this.store.close();
    if (crashAt !== undefined && !this.tiered) {
      const result = this.child({ mode: "reindex", dir: this.dir, limits: LIMITS, now: this.now, crashAtCall: crashAt });
      if (result.signal !== null && result.signal !== "SIGKILL") throw new Error(`reindex died with ${result.signal} (not the injected crash)`);
      if (result.status === 1) throw new Error(`reindex failed: ${result.stderr}`);
      if (result.status === 2) this.reindexRefused(JSON.parse(result.stdout) as { code: string; message: string });
      this.log.push(`  reindex ${result.signal ? "crashed" : "finished"}`);
      this.count(`reindex in a child ${result.signal ? "crashed" : "finished"}`);
    } else {
      const options = { dir: this.dir, limits: this.tiered ? { ...LIMITS, ...TIER_LIMITS } : LIMITS, clock: () => this.now, sweepTimers: false, id: "f1" };
      try {
        await Store.reindex(this.memory ? { ...options, objectStore: new SharedObjectStore(this.memory) } : options);
      } catch (err) {
        if (!StrataError.is(err)) throw err;
        this.reindexRefused(err);
      }
    }
    await this.open();
  }

  /** A reindex may refuse (e.g. CORRUPT over a damaged segment) only when something was damaged, and never for UNAVAILABLE without a tier. */
  private reindexRefused(err: { code: string; message: string }): void {
    this.log.push(`  reindex refused: ${err.code} ${err.message}`);
    this.count(`reindex refused ${err.code}`);
    if (err.code === "CORRUPT" && this.destroyed.length > 0) return;
    throw new Error(`reindex failed with ${err.code}: ${err.message}`);
  }

  /**
   * Loses the local disk and restores from the object store. First every segment is shipped (the
   * object store healthy meanwhile), so everything acknowledged is there; then the restore runs
   * against an object store that goes away at its `crashAt`-th call (the open fails, the disk
   * keeps what it had restored), and then again against a working one.
   */
  private async restore(crashAt: number | undefined, checkpoint: boolean): Promise<void> {
    const tier = this.store.tier!;
    this.objects!.setOffline(false);
    await this.store.sealActive();
    const drained = await Promise.race([tier.drained().then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 5000))]);
    if (!drained) throw new Error(`the tier did not ship its sealed segments within 5 s (backlog ${tier.backlog}): uploads are stuck`);
    if (checkpoint) await tier.checkpoint().catch((err: unknown) => this.log.push(`  checkpoint failed: ${(err as Error).message}`));
    await this.store.close();
    fs.rmSync(this.dir, { recursive: true, force: true });
    if (crashAt !== undefined) {
      try {
        await this.open(crashAt);
        this.log.push("  the restore finished before the outage");
        await this.store.close();
      } catch (err) {
        if (!StrataError.is(err, "UNAVAILABLE")) throw err;
        this.log.push(`  the restore failed: ${err.code} ${err.message}`);
        this.count("restore cut short");
      }
    }
    await this.open();
  }

  private child(job: ChildJob): { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string } {
    const r = spawnSync(process.execPath, ["--import", "tsx", CHILD, JSON.stringify(job)], { cwd: REPO, encoding: "utf8", timeout: 60_000 });
    return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
  }

  /** Everything readable equals the model (destroyed records aside); throws with the differences. */
  async check(when = "after the step"): Promise<void> {
    const diffs = await this.diff(this.model);
    if (diffs.length > 0) throw new Error(`${when}: the store differs from the model:\n${diffs.slice(0, 12).join("\n")}`);
  }

  private isDestroyed(loc: string, seqOrKey: number | string, rev: number): boolean {
    return this.destroyed.some((d) => d.loc === loc && (d.seq === seqOrKey || d.key === seqOrKey) && d.rev === rev);
  }

  /** How the store differs from `model`; reads are retried while the object store is flaky. */
  async diff(model: Model): Promise<string[]> {
    const out: string[] = [];
    for (const loc of ALL_LOCS) {
      try {
        await this.diffLocation(model, loc, out);
      } catch (err) {
        out.push(`${loc}: reading threw ${StrataError.is(err) ? err.code : ""} ${(err as Error).message}`);
      }
    }
    return out;
  }

  private async diffLocation(model: Model, loc: string, out: string[]): Promise<void> {
    const m = model.locs.get(loc);
    const tainted = this.tainted.has(loc);
    const inv = this.store.inventory(loc);
    // A location whose only records were destroyed may be gone after a rebuild.
    if (inv.kind !== m?.kind && !(tainted && inv.kind === undefined)) out.push(`${loc}: kind ${inv.kind}, want ${m?.kind}`);
    if (!m) return;
    if (!tainted) {
      if (inv.revision !== m.rev) out.push(`${loc}: revision ${inv.revision}, want ${m.rev}`);
      const revs = (await retry(() => this.store.changesSince(loc, 0, 1_000_000))).map((c) => c.revision);
      if (!same(revs, range(m.rev))) out.push(`${loc}: changes ${revs.join(",")}, want 1..${m.rev}`);
    }
    if (m.kind === "stream") {
      if (!tainted) {
        if (inv.lastSeq !== m.lastSeq) out.push(`${loc}: lastSeq ${inv.lastSeq}, want ${m.lastSeq}`);
        if (inv.count !== m.msgs.size) out.push(`${loc}: count ${inv.count}, want ${m.msgs.size}`);
        const want = [...m.msgs.entries()].sort(([a], [b]) => a - b).map(([seq, msg]) => `${seq}:${hex(msg.value)}@${msg.timestamp}`);
        const got = await retry(async () => {
          const list: string[] = [];
          for await (const msg of this.store.stream(loc).getAll()) list.push(`${msg.seq}:${hex(msg.value)}@${msg.timestamp}`);
          return list;
        });
        if (!same(got, want)) out.push(`${loc}: getAll ${got.join(" ")}, want ${want.join(" ")}`);
      }
      for (let seq = 1; seq <= m.lastSeq + 1; seq++) {
        const want = m.msgs.get(seq);
        const got = await readOutcome(() => this.store.stream(loc).get(seq));
        const gotText = got.code ?? (got.value === undefined ? "absent" : hex((got.value as { value: Uint8Array }).value));
        if (want !== undefined && this.isDestroyed(loc, seq, want.revision)) {
          if (got.code === "CORRUPT" || got.value === undefined || gotText === hex(want.value)) continue;
          const older = gotText; // an acknowledged value the record replaced, served again after a rebuild
          this.notes.push(`${loc} seq ${seq}: its record was destroyed and the store serves ${older.slice(0, 40)} instead of CORRUPT or nothing`);
          out.push(`${loc} seq ${seq}: destroyed record served as a value (${older.slice(0, 40)})`);
          continue;
        }
        const wantText = want === undefined ? "absent" : hex(want.value);
        if (gotText !== wantText) out.push(`${loc} seq ${seq}: ${gotText.slice(0, 60)}, want ${wantText.slice(0, 60)}`);
      }
    } else {
      const live = new Map(model.liveKv(loc));
      if (!tainted) {
        const want = [...live].map(([key, e]) => `${key}=${hex(e.value)}@${e.revision}`);
        const got = await retry(async () => {
          const list: string[] = [];
          for await (const e of this.store.kv(loc).getAll()) list.push(`${e.key}=${hex(e.value)}@${e.revision}`);
          return list;
        });
        if (!same(got, want)) out.push(`${loc}: kv getAll ${got.join(" ")}, want ${want.join(" ")}`);
      }
      for (const key of KEYS) {
        const want = live.get(key);
        const got = await readOutcome(() => this.store.kv(loc).get(key));
        const entry = got.value as { value: Uint8Array; revision: number } | undefined;
        const gotText = got.code ?? (entry === undefined ? "absent" : `${hex(entry.value)}@${entry.revision}`);
        if (want !== undefined && this.isDestroyed(loc, key, want.revision)) {
          if (got.code === "CORRUPT" || entry === undefined || gotText === `${hex(want.value)}@${want.revision}`) continue;
          this.notes.push(`${loc} key ${key}: its record was destroyed and the store serves ${gotText.slice(0, 40)} instead of CORRUPT or nothing`);
          out.push(`${loc} key ${key}: destroyed record served as a value (${gotText.slice(0, 40)})`);
          continue;
        }
        const wantText = want === undefined ? "absent" : `${hex(want.value)}@${want.revision}`;
        if (gotText !== wantText) out.push(`${loc} key ${key}: ${gotText.slice(0, 60)}, want ${wantText.slice(0, 60)}`);
      }
    }
  }

  async close(): Promise<void> {
    this.objects?.setOffline(false);
    await this.store.close().catch(() => undefined);
  }
}

/** Fails every call of the object store from the `calls`-th on, as a restore cut short by an outage or crash. */
class OutageAfter implements ObjectStore {
  constructor(
    private readonly inner: FaultyObjectStore,
    private calls: number,
  ) {}
  private tick(): void {
    if (this.calls-- <= 0) this.inner.setOffline(true);
  }
  put(key: string, body: Uint8Array): Promise<void> {
    this.tick();
    return this.inner.put(key, body);
  }
  putIfAbsent(key: string, body: Uint8Array): Promise<PutIfAbsentResult> {
    this.tick();
    return this.inner.putIfAbsent(key, body);
  }
  get createOnly(): CreateOnly {
    return this.inner.createOnly;
  }
  get(key: string, range?: ByteRange): Promise<Uint8Array | undefined> {
    this.tick();
    return this.inner.get(key, range);
  }
  head(key: string): Promise<{ size: number } | undefined> {
    this.tick();
    return this.inner.head(key);
  }
  list(prefix: string): AsyncIterable<ObjectInfo> {
    this.tick();
    return this.inner.list(prefix);
  }
  delete(key: string): Promise<void> {
    this.tick();
    return this.inner.delete(key);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

/** A read's answer: its value, or the code of the StrataError it threw (anything else is rethrown). */
async function readOutcome(read: () => Promise<unknown>): Promise<{ value?: unknown; code?: string }> {
  for (let attempt = 0; ; attempt++) {
    try {
      return { value: await read() };
    } catch (err) {
      if (!StrataError.is(err)) throw err;
      if (err.code === "UNAVAILABLE" && attempt < 20) continue; // a flaky object store: retry
      return { code: err.code };
    }
  }
}

/** Runs a read, retrying while the (flaky) object store answers UNAVAILABLE. */
async function retry<T>(read: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await read();
    } catch (err) {
      if (!StrataError.is(err, "UNAVAILABLE") || attempt >= 20) throw err;
    }
  }
}

function expectEq(got: unknown, want: unknown, what: string): void {
  expect(got, what).toEqual(want);
}

function hex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");
}

function same(a: readonly unknown[], b: readonly unknown[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i + 1);
}

function describe(step: FaultStep): string {
  return JSON.stringify(step, (key, value) => (value instanceof Uint8Array ? `<${value.byteLength} bytes>` : value));
}

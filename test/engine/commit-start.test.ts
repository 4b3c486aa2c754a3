/**
 * How the group commit starts (src/commit-queue.ts `kick`): an idle queue starts a write as soon
 * as the callback that submitted it and its microtasks are done, not a turn of the event loop
 * later (one write alone at one request in flight waited for that turn in vain), and yet the
 * writes issued together are still decided together, the writes arriving while a batch's
 * fdatasync is in flight still wait for it and share the next one, in order, and no write is
 * acknowledged before the fdatasync that covers it.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { nodeFileIo, type FileIo } from "../../src/log/file-io.js";
import { Store } from "../../src/store.js";
import { all } from "../helpers/collect.js";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

let dir: string;
let store: Store | undefined;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "strata-commit-start-"));
});

afterEach(async () => {
  await store?.close();
  store = undefined;
  fs.rmSync(dir, { recursive: true, force: true });
});

/**
 * The real disk, but the log's fdatasyncs in the thread pool wait while `hold()` is in effect, so
 * a test can see what arrives while one is in flight (a slow disk; nothing fails). The store must
 * keep them there (fsyncInlineMaxMs 0).
 */
function gatedIo(): { io: FileIo; hold(): void; release(): void; waiting(): number } {
  let gate: Promise<void> | undefined;
  let open = () => undefined as void;
  let waiting = 0;
  const io: FileIo = {
    ...nodeFileIo,
    fdatasync: async (fd) => {
      if (gate) {
        waiting += 1;
        await gate;
        waiting -= 1;
      }
      return nodeFileIo.fdatasync(fd);
    },
  };
  return {
    io,
    hold: () => {
      gate = new Promise<void>((resolve) => (open = resolve));
    },
    release: () => {
      gate = undefined;
      open();
    },
    waiting: () => waiting,
  };
}

/** Resolves once `cond()` holds (polled each turn; a bound so a bug fails instead of hanging). */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 10_000 && !cond(); i++) await new Promise((resolve) => setImmediate(resolve));
  expect(cond()).toBe(true);
}

describe("starting the group commit", () => {
  it("commits a lone write on an idle queue without waiting for a turn of the event loop", async () => {
    // fsync "interval": the small write is done with writeSync, so nothing else needs a turn.
    store = await Store.open({ dir, sweepTimers: false, fsync: "interval" });
    const s = store.stream("cs/lone");
    await s.append({ value: enc("warm") });
    let turned = false;
    setImmediate(() => (turned = true));
    const ack = await s.append({ value: enc("alone") });
    expect(turned).toBe(false);
    expect(ack.seq).toBe(2);
  });

  it("still decides the writes issued together in one batch", async () => {
    store = await Store.open({ dir, sweepTimers: false });
    const s = store.stream("cs/together");
    const kv = store.kv("cs/together-kv");
    const before = store.stats();
    const acks = await Promise.all([
      ...Array.from({ length: 20 }, (_, i) => s.append({ value: enc(`m${i}`) })),
      ...Array.from({ length: 5 }, (_, i) => kv.set(`k${i}`, enc(`v${i}`))),
    ]);
    const after = store.stats();
    expect(after.batches - before.batches).toBe(1);
    expect(after.fsyncs - before.fsyncs).toBe(1);
    expect(acks.slice(0, 20).map((a) => (a as { seq: number }).seq)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
  });

  it("batches the writes arriving during a batch's fdatasync together, after it, in order, each acknowledged only after its own fdatasync", async () => {
    const gate = gatedIo();
    // The thread pool's fdatasync, which the gate can hold (a lone write's would run on the event loop).
    store = await Store.open({ dir, sweepTimers: false, io: gate.io, limits: { fsyncInlineMaxMs: 0 } });
    const s = store.stream("cs/during");
    await s.append({ value: enc("warm") });
    const before = store.stats();
    gate.hold();
    const acked: string[] = [];
    const first = s.append({ value: enc("first") }).then((a) => (acked.push("first"), a));
    // The idle queue starts the first write at once: it is in its fdatasync before we go on.
    await until(() => gate.waiting() === 1);
    const rest = Array.from({ length: 10 }, (_, i) => s.append({ value: enc(`r${i}`) }).then((a) => (acked.push(`r${i}`), a)));
    // Let several turns pass: the later writes are decided, but none is written or acknowledged.
    for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve));
    expect(acked).toEqual([]);
    expect(gate.waiting()).toBe(1);
    gate.release();
    const acks = [await first, ...(await Promise.all(rest))];
    expect(acked).toEqual(["first", ...Array.from({ length: 10 }, (_, i) => `r${i}`)]);
    expect(acks.map((a) => a.seq)).toEqual(Array.from({ length: 11 }, (_, i) => i + 2));
    const after = store.stats();
    // The first write alone, then the ten that arrived meanwhile in one batch and one fdatasync.
    expect(after.batches - before.batches).toBe(2);
    expect(after.fsyncs - before.fsyncs).toBe(2);
    expect((await all(s.getAll())).map((m) => dec(m.value))).toEqual(["warm", "first", ...Array.from({ length: 10 }, (_, i) => `r${i}`)]);
  });

  it("answers every queued write, in order, when writes keep arriving from inside acknowledgements", async () => {
    store = await Store.open({ dir, sweepTimers: false, fsync: "interval" });
    const s = store.stream("cs/chain");
    // Each acknowledgement submits the next write (one in flight, as the net bench's client).
    const seqs: number[] = [];
    for (let i = 0; i < 50; i++) seqs.push((await s.append({ value: enc(`c${i}`) })).seq);
    expect(seqs).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    await store.queue.idle();
    expect((await all(s.getAll())).length).toBe(50);
  });
});

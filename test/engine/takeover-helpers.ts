/**
 * Shared pieces of the takeover tests: in-process stores over one directory tier (real files, no
 * NATS), a workload touching every kind of record, and `dump`, everything observable about some
 * locations (bytes as hex) so that two stores can be compared read for read.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { StoreOptions } from "../../src/config.js";
import { Store } from "../../src/store.js";
import { captureLogger } from "../helpers/capture-logger.js";
import { all } from "../helpers/collect.js";

const KiB = 1024;
/** Small limits: chunked values, segment rolls and paging happen with little data. */
export const LIMITS = {
  chunkBytes: 4 * KiB,
  recordBytesMax: 8 * KiB,
  headersBytesMax: 2 * KiB,
  segmentBytesMax: 32 * KiB,
  blockBytes: 2 * KiB,
  blockCacheBytes: 64 * KiB,
  scanPageSize: 4,
  dedupWindowMs: 60_000,
  valueBytesMax: 200 * KiB,
  uploadRetryMaxMs: 100,
  objectAckTimeoutMs: 10_000,
  closeUploadWaitMs: 10_000,
  importRetryMs: 500,
};
export const T0 = 1_700_000_000_000;
export const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const hex = (b: Uint8Array | undefined) => (b === undefined ? undefined : Buffer.from(b).toString("hex"));

export class World {
  readonly root = fs.mkdtempSync(path.join(os.tmpdir(), "strata-takeover-"));
  readonly tier = `dir:${path.join(this.root, "objects")}`;
  now = T0;
  /** What every store of this world logged at warn or worse (a test asserts on its events). */
  readonly log = captureLogger({ level: "warn" });
  /** The messages of those events, in order (for failure reports). */
  readonly warnings = this.log.warnings;
  private readonly open = new Set<Store>();

  dir(id: string): string {
    return path.join(this.root, `data-${id}`);
  }

  async store(id: string, extra: Partial<StoreOptions> = {}): Promise<Store> {
    const s = await Store.open({
      dir: this.dir(id),
      id,
      tier: this.tier,
      limits: LIMITS,
      sweepTimers: false,
      clock: () => this.now,
      logger: this.log.logger,
      ...extra,
    });
    this.open.add(s);
    return s;
  }

  async close(s: Store): Promise<void> {
    this.open.delete(s);
    await s.close();
  }

  async dispose(): Promise<void> {
    for (const s of this.open) await s.close().catch(() => undefined);
    fs.rmSync(this.root, { recursive: true, force: true });
  }
}

/** Seals and ships everything written so far; returns the last shipped segment. */
export async function shipAll(s: Store): Promise<number> {
  await s.sealActive();
  await s.tier!.drained();
  return s.log.activeId - 1;
}

export function bytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed * 7) % 251;
  return out;
}

/** Every kind of record on one stream and one kv location (and noise on another location). */
export async function workload(s: Store, w: World, tag: string): Promise<void> {
  const st = s.stream(`${tag}/stream`);
  for (let i = 1; i <= 6; i++) await st.append({ value: enc(`m${i}`), headers: { i: String(i) } }, { msgId: `id-${i}` });
  await st.set(20, { value: enc("twenty"), timestamp: 42 });
  await st.delete(2);
  await st.deleteAll({ endSeq: 3 });
  await st.append({ value: bytes(13 * KiB, 1) }, { msgId: "big" }); // chunked: > chunkBytes
  await s.stream(`${tag}/noise`).append({ value: enc("not imported") });
  const kv = s.kv(`${tag}/kv`);
  await kv.set("a", enc("A1"));
  await kv.set("b", enc("B1"), { headers: { x: "y" } });
  await kv.set("ttl", enc("short"), { ttlMs: 5000 });
  await kv.set("long", enc("long"), { ttlMs: 3_600_000 });
  await kv.delete("b");
  const a = await kv.get("a");
  await kv.set("a", enc("A2"), { expectedRevision: a!.revision });
  await kv.set("big", bytes(9 * KiB, 2));
  w.now += 10;
}

export const LOCS = (tag: string) => ({ streams: [`${tag}/stream`], kvs: [`${tag}/kv`] });

/** Everything observable about some locations. */
export async function dump(s: Store, streams: string[], kvs: string[]): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = {};
  for (const loc of streams) {
    const msgs = (await all(s.stream(loc).getAll())).map((m) => ({ ...m, value: hex(m.value) }));
    const gets = [];
    for (const m of msgs) gets.push(hex((await s.stream(loc).get(m.seq))?.value));
    out[loc] = { inv: s.inventory(loc), msgs, gets };
  }
  for (const loc of kvs) {
    const kv = s.kv(loc);
    const entries = (await all(kv.getAll())).map((e) => ({ ...e, value: hex(e.value) }));
    const gets = [];
    for (const e of entries) gets.push(hex((await kv.get(e.key))?.value));
    out[loc] = { inv: s.inventory(loc), entries, keys: await all(kv.keys()), gets };
  }
  for (const loc of [...streams, ...kvs]) out[`changes:${loc}`] = (await s.changesSince(loc, 0, 100_000)).map((c) => JSON.stringify(c));
  return out;
}

/**
 * An origin copy: a private, writable copy of another server's index as one of its checkpoints
 * left it (or an empty index when it has none), opened under `<data>/import-tmp/`, into which a
 * takeover (./takeover.ts) replays that server's later records of the locations it imports, with
 * the very apply code of the server's own index (../index/apply.ts). The copy is therefore, for
 * each such location, exactly the index the origin had at the cut; `extractRows` then reads the
 * location's rows and translates every pointer into the importing index's segment space.
 *
 * Pointers in the copy are the origin's: below 2^32 its own segments, above them its foreign logs
 * (named by the copy's `logs` table). Translated, a pointer names segment `s` of some server X:
 * X = the importing server → its own segment `s`; any other X → a prepared foreign log
 * (../index/import-rows.ts), renumbered to a real one when the import record is applied.
 *
 * Invariants: a copy is used by one import at a time (the importer serialises imports) and is
 * closed and its directory removed once evicted and no longer used; `applied` records, per
 * location, the last origin segment whose records are in the copy, so a later import of the same
 * location with a larger cut continues where the last one stopped, and one with a smaller cut gets
 * a fresh copy instead.
 */
import fs from "node:fs";
import path from "node:path";
import { StrataError } from "../errors.js";
import { locationEnd } from "../index/codecs.js";
import { foreignSeg, isForeign, localSeg, logOf, serverOf } from "../index/foreign-logs.js";
import type { ImportRows } from "../index/import-rows.js";
import { LmdbIndex } from "../index/lmdb-index.js";
import { boundLineage, lineageOf } from "../index/lineage.js";
import { SEGMENT_HEADER_BYTES } from "../log/segment-files.js";

/** Metadata cached per opened copy: an import reads a few locations of it. */
const COPY_META_CACHE_MAX = 1024;

export class OriginCopy {
  /** Per location: the last origin segment whose records of it are applied to the copy. */
  readonly applied = new Map<string, number>();
  users = 0;
  evicted = false;
  private closing: Promise<void> | undefined;

  private constructor(
    readonly from: string,
    readonly dir: string,
    readonly index: LmdbIndex,
    /** The checkpoint key the copy came from (undefined: an empty index, every segment replayed). */
    readonly ckpt: string | undefined,
    /** Where the origin's log goes on after the copy: records from here on are replayed. */
    readonly start: { seg: number; off: number },
    /** Disk bytes of the copy (its cache weight). */
    readonly bytes: number,
  ) {}

  /** Opens a copy from a verified, decompressed checkpoint (`raw`), or an empty one (`raw` undefined). */
  static open(tmpRoot: string, from: string, ckpt: string | undefined, raw: Buffer | undefined): OriginCopy {
    fs.mkdirSync(tmpRoot, { recursive: true });
    const dir = fs.mkdtempSync(path.join(tmpRoot, "origin-"));
    try {
      if (raw) fs.writeFileSync(path.join(dir, "index.mdb"), raw);
      const index = LmdbIndex.open(dir, { metaCacheMax: COPY_META_CACHE_MAX });
      const cp = index.checkpoint();
      if (raw && cp === undefined) {
        void index.close().catch(() => undefined);
        throw new StrataError("CORRUPT", `index checkpoint ${ckpt} names no log position; it is skipped`);
      }
      return new OriginCopy(from, dir, index, ckpt, cp ?? { seg: 0, off: SEGMENT_HEADER_BYTES }, raw?.byteLength ?? 0);
    } catch (err) {
      fs.rmSync(dir, { recursive: true, force: true });
      throw err;
    }
  }

  /** Closes the index and removes the directory (once; later calls wait for the same close). */
  close(): Promise<void> {
    this.closing ??= this.index
      .close()
      .catch(() => undefined)
      .finally(() => fs.rmSync(this.dir, { recursive: true, force: true }));
    return this.closing;
  }
}

/**
 * The rows of `loc` in `copy`, with pointers translated for an index whose own server is `self`
 * (see the file comment). Undefined `meta` when the origin had no such location.
 */
export function extractRows(copy: OriginCopy, loc: string, self: string, lineageMax: number): ImportRows {
  const index = copy.index;
  // The lineage comes along even when the origin holds no rows of the location (an empty import's entry).
  const lineage = boundLineage(lineageOf(index, loc), lineageMax - 1);
  const rows: ImportRows = { logs: [], seqs: [], kvs: [], revs: [], dedup: [], lineage, lineageMax, bytes: 0 };
  if (copy.ckpt !== undefined) rows.ckpt = copy.ckpt;
  const meta = index.locs.get(loc);
  if (meta === undefined) return rows;
  rows.meta = { kind: meta.kind, rev: meta.rev, lastSeq: meta.lastSeq, count: meta.count, bytes: meta.bytes };
  const known = new Map<string, number>();
  const seg = (s: number): number => {
    let server = copy.from;
    if (isForeign(s)) {
      const named = serverOf(index, logOf(s));
      if (named === undefined) throw new StrataError("CORRUPT", `the index of server "${copy.from}" points into its foreign log ${logOf(s)}, which it does not name; the takeover cannot use it`);
      server = named;
    }
    if (server === self) return localSeg(s);
    let k = known.get(server);
    if (k === undefined) {
      rows.logs.push(server);
      k = rows.logs.length;
      known.set(server, k);
    }
    return foreignSeg(k, localSeg(s));
  };
  const id = meta.id;
  for (const { key, value: e } of index.seqs.getRange({ start: [id, 0], end: locationEnd(id) })) rows.seqs.push([key[1] as number, [seg(e[0]), e[1], e[2], e[3]]]);
  for (const { key, value: e } of index.kvs.getRange({ start: [id, ""], end: [id + 1, ""] })) rows.kvs.push([key[1] as string, [seg(e[0]), e[1], e[2], e[3], e[4], e[5]]]);
  for (const { key, value: e } of index.revs.getRange({ start: [id, 0], end: locationEnd(id) })) {
    rows.revs.push([key[1] as number, e[3] === undefined ? [seg(e[0]), e[1], e[2]] : [seg(e[0]), e[1], e[2], e[3]]]);
  }
  for (const { key, value } of index.dedup.getRange({ start: [id], end: [id + 1] } as never)) rows.dedup.push([(key as [number, string])[1], value]);
  const conf = index.conf.get(id);
  if (conf) rows.conf = { seg: seg(conf.seg), off: conf.off, len: conf.len, limits: conf.limits };
  rows.bytes = 32 * (rows.seqs.length + rows.revs.length + rows.dedup.length) + 64 * rows.kvs.length;
  return rows;
}

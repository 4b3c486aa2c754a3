/**
 * The store's part in ownership and takeovers (docs/failover.md): what a server under a coordinator
 * asks of its `Store` when it fences, quarantines, hands a location over or takes one over. `Store`
 * keeps the same methods and delegates each to this class in one line, so callers
 * (net/server/ownership.ts, net/server/server.ts, tests) see no difference.
 * - Fencing: `firstUnshipped`, `recordsFrom` and `locationsFrom` say what of this store's own log
 *   is not in the object store (compaction outputs hold only shipped records).
 * - Quarantine (./index/quarantine.ts): `quarantine` and `unquarantine` never throw (a failure to
 *   record one is a warning, the claim goes on), and do nothing once the store is closing.
 * - Handover and takeover: `shipAll` seals and waits for every sealed segment (the handover's cut);
 *   `importLocations` (./import-locations.ts) imports from another server's object-store data and
 *   says when it drops a quarantine, never silently; `lastSegmentOf` and `waitUploaded` need the
 *   object store (INVALID_ARGUMENT without a tier).
 * It holds no state of its own: everything is read from the store when a method is called (the
 * tier and importer are set after the store is constructed).
 */
import fs from "node:fs";
import path from "node:path";
import { StrataError } from "./errors.js";
import { isForeign } from "./index/foreign-logs.js";
import * as reads from "./index/index-reads.js";
import { cameBackWarning, dropQuarantine, listQuarantine, noteQuarantine, quarantineOf, quarantinedAmong, type QuarantineEntry, type QuarantineInfo } from "./index/quarantine.js";
import { importLocations, validateServerId, type ImportItem, type ImportResult } from "./import-locations.js";
import { scanRecords } from "./log/frame-scan.js";
import type { Pointer } from "./log/record.js";
import { SEGMENT_HEADER_BYTES, listSegmentIds, segmentPath } from "./log/segment-files.js";
import { isCompacted } from "./log/segment-set.js";
import type { Store } from "./store.js";

export class StoreOwnership {
  constructor(
    private readonly store: Store,
    /** Throws CLOSED once the store is closing (Store.checkOpen). */
    private readonly checkOpen: () => void,
  ) {}

  /** The first own segment whose records are not in the object store (see Tier.firstUnshipped). */
  firstUnshipped(): number {
    return this.store.tier ? this.store.tier.firstUnshipped(this.store.log.activeId) : 0;
  }

  /**
   * How many records of `location` lie in own segments from `seg` on (newest first,
   * counting at most `max`): what a server that lost the location never shipped.
   */
  recordsFrom(location: string, seg: number, max: number): number {
    this.checkOpen();
    const meta = this.store.index.meta(location);
    if (!meta) return 0;
    let n = 0;
    for (const { ptr } of reads.scanRevsNewest(this.store.index, meta.id, max)) {
      if (ptr.seg >= seg && !isForeign(ptr.seg)) n += 1;
    }
    return n;
  }

  /**
   * The locations with records in own local segments from `seg` on (at most `max`):
   * what a server that restarted may have written and never shipped. Reads those segment files
   * whole, one at a time; damaged ranges are skipped.
   */
  locationsFrom(seg: number, max: number): string[] {
    this.checkOpen();
    const dir = path.join(this.store.config.dir, "segments");
    const out = new Set<string>();
    for (const id of listSegmentIds(dir)) {
      // Compaction outputs hold only records of shipped segments (with a tier, a run's inputs are uploaded).
      if (id < seg || isCompacted(id)) continue;
      let buf: Buffer;
      try {
        buf = fs.readFileSync(segmentPath(dir, id));
      } catch {
        continue; // evicted or removed meanwhile: then it was shipped
      }
      // Local files: the active one (and one being sealed) may end in a zero tail.
      for (const step of scanRecords(buf, SEGMENT_HEADER_BYTES, this.store.config.limits.recordBytesMax, { zeroTailIsEnd: true })) {
        if (step.kind === "record" && step.rec.t !== "chunk") {
          out.add(step.rec.loc);
          if (out.size >= max) return [...out];
        }
      }
    }
    return [...out];
  }

  /**
   * Records in the index that `location` moved to another server while records of it
   * from own segment `fromSegment` on were never shipped (index/quarantine.ts; noting it again
   * updates it). Never throws: a failure to record it is a warning, the claim goes on.
   */
  quarantine(location: string, info: Omit<QuarantineInfo, "at">): void {
    if (this.store.closed) return;
    try {
      this.store.index.write(() => noteQuarantine(this.store.index, location, { ...info, at: this.store.now() }));
    } catch (err) {
      this.store.config.logger.warn({ event: "quarantine_not_recorded", location, error: (err as Error).message }, `the quarantine of location "${location}" could not be recorded in the index (${(err as Error).message}); it is reported by this process only`);
    }
  }

  /**
   * `location` is this store's again with its own history (granted back without a
   * handoff): its records are served again, so it is no longer quarantined. Never throws.
   */
  unquarantine(location: string): void {
    if (this.store.closed || quarantineOf(this.store.index.quarantine, location) === undefined) return;
    try {
      this.store.index.write(() => dropQuarantine(this.store.index, location));
      this.store.config.logger.warn({ event: "quarantine_dropped", location }, `location "${location}" is served by this server again with its own history; its records that were never shipped are part of it again`);
    } catch (err) {
      this.store.config.logger.warn({ event: "quarantine_not_dropped", location, error: (err as Error).message }, `the quarantine of location "${location}" could not be dropped from the index (${(err as Error).message})`);
    }
  }

  /** Locations that moved away while this store held records of them it never shipped (`strata stat` lists them too). */
  quarantined(): QuarantineEntry[] {
    this.checkOpen();
    return listQuarantine(this.store.index.quarantine);
  }

  /**
   * Seals the active segment and waits until every sealed segment is in the object
   * store; resolves to the id of the last segment shipped (the cut of a handover).
   */
  async shipAll(): Promise<number> {
    if (!this.store.tier) throw new StrataError("INVALID_ARGUMENT", "handing a location over needs a cold tier; open the store with a tier");
    await this.store.sealActive();
    const cut = this.store.log.activeId - 1;
    await this.store.tier.drained();
    return cut;
  }

  /**
   * Takes locations over from another server's object-store data (docs/failover.md, step 6): each
   * location is reset here and becomes what `from`'s segments up to `cut` (inclusive) hold of it,
   * pointing at `from`'s segments (no value is copied). Resolves once every import record is
   * fsync'd and applied; the location is then served from this store. An origin with nothing in
   * the object store gives an empty location. Needs a tier (INVALID_ARGUMENT without one).
   */
  importLocations(items: ImportItem[]): Promise<ImportResult[]> {
    this.checkOpen();
    const importer = this.store.importer;
    const back = quarantinedAmong(this.store.index.quarantine, items);
    const done = importLocations({ limits: this.store.limits, serverId: this.store.config.id, importer, now: () => this.store.now(), submit: (op) => this.store.submit(op) }, items);
    // The import drops a location's quarantine (index/import-rows.ts): say so, never silently.
    if (back.length > 0) void done.then(() => back.forEach((b) => this.store.config.logger.warn({ event: "location_came_back", location: b.location, from: b.from, records: b.q.records }, cameBackWarning(b))), () => undefined);
    return done;
  }

  /** The last segment of server `from` in the object store (a takeover's cut), undefined when it has none. */
  async lastSegmentOf(from: string): Promise<number | undefined> {
    this.checkOpen();
    validateServerId(from);
    if (!this.store.importer) throw new StrataError("INVALID_ARGUMENT", "reading another server's segments needs the object store; open the store with a tier");
    return this.store.importer.lastSegment(from);
  }

  /** Resolves once the records at `ptrs` (e.g. import records) are in the object store. */
  async waitUploaded(ptrs: Pointer[]): Promise<void> {
    this.checkOpen();
    if (!this.store.tier) throw new StrataError("INVALID_ARGUMENT", "waiting for the object store needs a tier; open the store with a tier");
    await this.store.tier.waitRecordsUploaded(ptrs);
  }
}

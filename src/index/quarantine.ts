/**
 * The moved-away quarantine (docs/failover.md, "Return of the old holder"): locations that moved
 * to another server while this one held records of them it had never shipped to the object store.
 * Those records are not part of the location's history at its new owner; they stay in this
 * server's log, are never served, and are listed here so that `strata stat` and the server report
 * them after a restart too (the server's in-memory list is gone by then, and once the records are
 * shipped late nothing else can tell them apart).
 *
 * Index table `quarantine`: location → QuarantineInfo. Adding the table changed no existing
 * table's layout, so INDEX_FORMAT stayed 2: an index of a previous release opens as one with an
 * empty quarantine (./lmdb-index.ts).
 *
 * The entries are derived from the coordinator's answers (a claim refused because the location
 * moved), not from the log, so replaying the log cannot recreate them: a rebuild of the index
 * starts with an empty table. `strata reindex` carries the entries of the index it replaces over
 * (Store.reindex); an automatic rebuild (damaged index, OS crash) loses them, and the server
 * notes a location again only while its records are still unshipped when its claim is refused.
 *
 * Invariants: noting a location again updates its entry (the newest owner, the larger count, the
 * earlier segment, the first time it was noted), so a re-noting after a restart never shrinks
 * what is reported; an import of the location (it came back: ./import-rows.ts) removes its entry
 * in the same index transaction that replaces its rows; nothing here deletes a record.
 * Not to be confused with the records replay could not apply (apply.ts, `sys` "quarantine/…").
 */
import type { Database } from "lmdb";
import type { Logger } from "../logger.js";
import type { LmdbIndex } from "./lmdb-index.js";
import { indexExists, openIndexReadOnly, type ReadOnlyIndex } from "./read-only-index.js";

export interface QuarantineInfo {
  /** The server the coordinator named as the location's owner when the claim was refused. */
  movedTo: string;
  /** Records of the location in own segments from `fromSegment` on (a lower bound when it saturated). */
  records: number;
  /** The first own segment that was not in the object store when the move was noted. */
  fromSegment: number;
  /** When the move was first noted (ms since the epoch, the store's clock). */
  at: number;
}

export interface QuarantineEntry extends QuarantineInfo {
  location: string;
}

export type QuarantineTable = Database<QuarantineInfo, string>;

/** Inside an index write transaction: notes (or updates) the quarantine of `location`. */
export function noteQuarantine(index: LmdbIndex, location: string, info: QuarantineInfo): void {
  const old = validInfo(index.quarantine.get(location));
  const next: QuarantineInfo = old
    ? { movedTo: info.movedTo, records: Math.max(old.records, info.records), fromSegment: Math.min(old.fromSegment, info.fromSegment), at: Math.min(old.at, info.at) }
    : info;
  index.quarantine.put(location, next);
}

/** Inside an index write transaction: `location` came back to this server; it is no longer quarantined. */
export function dropQuarantine(index: LmdbIndex, location: string): void {
  index.quarantine.remove(location);
}

/** The quarantine of `location`, if it has one. */
export function quarantineOf(table: QuarantineTable, location: string): QuarantineInfo | undefined {
  return validInfo(table.get(location));
}

/** Every entry, in location order (entries of an unexpected shape are left out). */
export function listQuarantine(table: QuarantineTable): QuarantineEntry[] {
  const out: QuarantineEntry[] = [];
  for (const { key, value } of table.getRange()) {
    const info = validInfo(value);
    if (typeof key === "string" && info) out.push({ location: key, ...info });
  }
  return out;
}

function validInfo(v: unknown): QuarantineInfo | undefined {
  if (typeof v !== "object" || v === null) return undefined;
  const o = v as Record<string, unknown>;
  const num = (x: unknown): x is number => typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
  if (typeof o.movedTo !== "string" || !num(o.records) || !num(o.fromSegment) || !num(o.at)) return undefined;
  return { movedTo: o.movedTo, records: o.records, fromSegment: o.fromSegment, at: o.at };
}

/**
 * The quarantined locations among the items of an import about to be made (not validated yet:
 * anything that is not an item naming a location is passed over; the import refuses it).
 */
export function quarantinedAmong(table: QuarantineTable, itemsUntrusted: unknown): Array<{ location: string; from: string; q: QuarantineInfo }> {
  if (!Array.isArray(itemsUntrusted)) return [];
  const out: Array<{ location: string; from: string; q: QuarantineInfo }> = [];
  for (const item of itemsUntrusted as unknown[]) {
    const { location, from } = (typeof item === "object" && item !== null ? item : {}) as { location?: unknown; from?: unknown };
    if (typeof location !== "string" || location === "" || typeof from !== "string") continue;
    let q: QuarantineInfo | undefined;
    try {
      q = quarantineOf(table, location);
    } catch {
      continue; // not a key the index can hold: the import refuses the location anyway
    }
    if (q) out.push({ location, from, q });
  }
  return out;
}

/** What an operator is told when a quarantined location is imported back (its entry goes). */
export function cameBackWarning({ location, from, q }: { location: string; from: string; q: QuarantineInfo }): string {
  return (
    `location "${location}" came back to this server (imported from "${from}"): its history is the imported one; ` +
    `the ${q.records} records of it this server never shipped (quarantined since ${new Date(q.at).toISOString()}) stay in its log but are no longer part of it, nor reported`
  );
}

/**
 * The entries of the index in `indexDir` (empty when it has none, or cannot be read: then a
 * warning says they are not carried over), read-only, for a rebuild to write back.
 */
export async function savedQuarantine(indexDir: string, logger: Logger): Promise<QuarantineEntry[]> {
  if (!indexExists(indexDir)) return [];
  let index: ReadOnlyIndex;
  try {
    index = openIndexReadOnly(indexDir);
  } catch (err) {
    logger.warn({ event: "quarantine_not_carried", error: (err as Error).message }, `the moved-away quarantine of the index being replaced cannot be read (${(err as Error).message}); it is not carried over to the rebuilt index`);
    return [];
  }
  try {
    return index.quarantine ? listQuarantine(index.quarantine) : [];
  } finally {
    await index.close();
  }
}

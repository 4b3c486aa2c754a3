/**
 * Where a server's data lives in the object store. Everything of server `id` is under `id/`:
 * sealed segments at `id/segments/<16 hex digits>.sst` (so a listing is in segment order) and
 * index checkpoints at `id/checkpoints/<seg 16 hex>-<offset 16 hex>.mdb.zst`, named by the log
 * position the checkpoint reflects; compaction markers at `id/compactions/` and takeover pins at
 * `id/pins/` (below).
 */
import { isValidCover, type Cover } from "../log/segment-set.js";

export function segmentKey(id: string, seg: number): string {
  return `${id}/segments/${hex(seg)}.sst`;
}

export function segmentsPrefix(id: string): string {
  return `${id}/segments/`;
}

export function checkpointKey(id: string, pos: { seg: number; off: number }): string {
  return `${id}/checkpoints/${hex(pos.seg)}-${hex(pos.off)}.mdb.zst`;
}

export function checkpointsPrefix(id: string): string {
  return `${id}/checkpoints/`;
}

export function parseSegmentKey(id: string, key: string): number | undefined {
  const m = new RegExp(`^${escape(id)}/segments/([0-9a-f]{16})\\.sst$`).exec(key);
  return m ? Number.parseInt(m[1]!, 16) : undefined;
}

export function parseCheckpointKey(id: string, key: string): { seg: number; off: number } | undefined {
  const m = new RegExp(`^${escape(id)}/checkpoints/([0-9a-f]{16})-([0-9a-f]{16})\\.mdb\\.zst$`).exec(key);
  return m ? { seg: Number.parseInt(m[1]!, 16), off: Number.parseInt(m[2]!, 16) } : undefined;
}

function hex(n: number): string {
  return n.toString(16).padStart(16, "0");
}

function escape(s: string): string {
  return s.replace(/[-/\\^$*+?.()|[\]{}]/g, "\\$&");
}

/**
 * Compaction markers (docs/compaction.md): `id/compactions/<output 16 hex>-<lo 16 hex>-<hi 16 hex>`,
 * an empty object put once the output's create-only put succeeded; the name carries the cover.
 */
export function compactionMarkerKey(id: string, c: Cover): string {
  return `${id}/compactions/${hex(c.id)}-${hex(c.lo)}-${hex(c.hi)}`;
}

export function compactionsPrefix(id: string): string {
  return `${id}/compactions/`;
}

/** The cover a marker key names, or undefined for any other key (or a malformed cover). */
export function parseCompactionMarkerKey(id: string, key: string): Cover | undefined {
  const m = new RegExp(`^${escape(id)}/compactions/([0-9a-f]{16})-([0-9a-f]{16})-([0-9a-f]{16})$`).exec(key);
  if (!m) return undefined;
  const c = { id: Number.parseInt(m[1]!, 16), lo: Number.parseInt(m[2]!, 16), hi: Number.parseInt(m[3]!, 16) };
  return isValidCover(c) ? c : undefined;
}

/**
 * Takeover pins (docs/compaction.md, "Takeover points"): `from/pins/<importer>-<cut 16 hex>`, put by
 * server `importer` before it reads anything of `from` for an import with that cut. `from`'s
 * reclaim keeps every input whose cover starts at or below a pinned cut.
 */
export function pinKey(from: string, importer: string, cut: number): string {
  return `${from}/pins/${importer}-${hex(cut)}`;
}

export function pinsPrefix(id: string): string {
  return `${id}/pins/`;
}

/** The importer and cut a pin key names, or undefined for any other key. */
export function parsePinKey(id: string, key: string): { importer: string; cut: number } | undefined {
  const m = new RegExp(`^${escape(id)}/pins/(.+)-([0-9a-f]{16})$`).exec(key);
  return m ? { importer: m[1]!, cut: Number.parseInt(m[2]!, 16) } : undefined;
}

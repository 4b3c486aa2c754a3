/**
 * Where a server's data lives in the object store. Everything of server `id` is under `id/`:
 * sealed segments at `id/segments/<16 hex digits>.sst` (so a listing is in segment order) and
 * index checkpoints at `id/checkpoints/<seg 16 hex>-<offset 16 hex>.mdb.zst`, named by the log
 * position the checkpoint reflects.
 */
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

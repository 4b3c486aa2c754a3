/**
 * Takeover pins (docs/compaction.md, "Takeover points (pins)"). An importer puts
 * `from/pins/<importer>-<cut>` (empty) before it reads anything of server `from` for an import with
 * that cut; `from`'s reclaim lists the pins after it deleted the checkpoints older than a switch and
 * keeps every input whose cover starts at or below the highest pinned cut. That order is what makes
 * it safe without a lock: an importer that read an old checkpoint wrote its pin before it read, so
 * before the listing that would have allowed the delete. Pins are never deleted in this version.
 *
 * A put of an empty object is idempotent, so writing a pin twice (a retried import, a replay that
 * redoes one) is harmless; callers cache what they wrote to save the round trip.
 */
import type { ObjectStore } from "./object-store.js";
import { parsePinKey, pinKey, pinsPrefix } from "./segment-keys.js";

const EMPTY = new Uint8Array(0);

export interface Pin {
  importer: string;
  cut: number;
}

/** Pins `from`'s segments up to `cut` for an import by `importerId`. */
export async function writePin(objects: ObjectStore, from: string, importerId: string, cut: number): Promise<void> {
  await objects.put(pinKey(from, importerId, cut), EMPTY);
}

/** Every pin on `serverId`'s segments. */
export async function listPins(objects: ObjectStore, serverId: string): Promise<Pin[]> {
  const out: Pin[] = [];
  for await (const o of objects.list(pinsPrefix(serverId))) {
    const p = parsePinKey(serverId, o.key);
    if (p) out.push(p);
  }
  return out.sort((a, b) => a.cut - b.cut || (a.importer < b.importer ? -1 : a.importer > b.importer ? 1 : 0));
}

/** The highest cut any importer pinned on `serverId`'s segments, or undefined when none is pinned. */
export async function pinnedCut(objects: ObjectStore, serverId: string): Promise<number | undefined> {
  let max: number | undefined;
  for (const p of await listPins(objects, serverId)) max = Math.max(max ?? 0, p.cut);
  return max;
}

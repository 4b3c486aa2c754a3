/**
 * Ships one sealed segment to the object store create-only, and decides what an object already
 * under its name means. Owned by the tier's upload loop (./tier.ts).
 *
 * Invariants:
 * - A segment object is never replaced, except the one segment the caller names `replace` (the
 *   segment that was active when the store opened and whose older, shorter version is in the
 *   object store: ./tier.ts `start`).
 * - "exists" is taken as shipped only when the object holds exactly this segment: the same sealed
 *   bytes, or (sealed with other settings, e.g. another blockBytes) the same raw segment once
 *   unsealed. That is the retry of a put that succeeded but whose success was never recorded (a
 *   crash, a lost reply, an SDK retry answered 412).
 * - Anything else is a conflict: another process with the same server id (a paused twin woken
 *   after a restore elsewhere) wrote its own version first. It is reported, never overwritten.
 * - A mismatch seen by one read only is not a conflict: a flipped bit on the way would then
 *   quarantine a segment for nothing. Two reads that disagree with each other are a transient
 *   failure (UNAVAILABLE, retried); a conflict needs two identical reads that both differ.
 */
import { StrataError } from "../errors.js";
import type { ObjectStore } from "./object-store.js";
import { unsealSegment } from "./sealed-segment.js";

export type ShipOutcome =
  | { kind: "shipped"; how: "created" | "replaced" | "already-there" }
  | { kind: "conflict"; objectBytes: number };

export async function shipSegment(
  objects: ObjectStore,
  key: string,
  seg: number,
  sealed: Uint8Array,
  raw: Buffer,
  replace: boolean,
): Promise<ShipOutcome> {
  if (replace) {
    await objects.put(key, sealed);
    return { kind: "shipped", how: "replaced" };
  }
  if ((await objects.putIfAbsent(key, sealed)) === "created") return { kind: "shipped", how: "created" };
  const first = await readBack(objects, key, seg);
  if (holdsSegment(first, seg, sealed, raw)) return { kind: "shipped", how: "already-there" };
  const second = await readBack(objects, key, seg);
  if (holdsSegment(second, seg, sealed, raw)) return { kind: "shipped", how: "already-there" };
  if (!Buffer.from(first.buffer, first.byteOffset, first.byteLength).equals(second)) {
    throw new StrataError("UNAVAILABLE", `segment ${seg}: two reads of ${key} gave different bytes (damaged on the way?); comparing again later`);
  }
  return { kind: "conflict", objectBytes: first.byteLength };
}

async function readBack(objects: ObjectStore, key: string, seg: number): Promise<Uint8Array> {
  const body = await objects.get(key);
  if (body === undefined) {
    // Deleted between the two calls: a retry can create it.
    throw new StrataError("UNAVAILABLE", `segment ${seg}: the object store said ${key} exists, then had no such object; retrying`);
  }
  return body;
}

/** Whether `object` is segment `seg` as sealed here, or the same raw segment sealed otherwise. */
function holdsSegment(object: Uint8Array, seg: number, sealed: Uint8Array, raw: Buffer): boolean {
  const obj = Buffer.from(object.buffer, object.byteOffset, object.byteLength);
  if (obj.byteLength === sealed.byteLength && obj.equals(sealed)) return true;
  try {
    return unsealSegment(seg, obj).equals(raw);
  } catch {
    return false; // not a sealed segment at all (or damaged): not ours either way
  }
}

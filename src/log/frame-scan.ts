/**
 * Walking a segment's bytes record by record, and resynchronisation after a bad frame.
 * `scanRecords` is the one walk of a segment: it yields each whole, valid record, and each damaged
 * range (a frame that is incomplete, fails its checksum or does not decode) with where the next
 * valid record starts (found by `resync`), or that none follows. Replay (../replay.ts) and
 * sealing (../tier/sealed-segment.ts) both walk with it, so the local replay and the object store
 * agree byte for byte on what is a record and what is damaged.
 *
 * Why it matters: a torn write can only be at the very end of the log, so "nothing valid
 * follows" is a torn tail (cut), while "valid records follow" is corruption of a range in the
 * middle: the range [bad, next) is skipped and reported, and the acknowledged records after it
 * are kept.
 *
 * Invariants:
 * - Pure: bytes in, offsets out; `scanRecords` decides nothing (cutting a torn tail or skipping a
 *   damaged range is the caller's choice), and its offsets are relative to the buffer.
 * - `resync` only ever starts at a frame already known to be bad, so it
 *   never looks for records inside a valid record (a value holding bytes that look like a frame
 *   is never mistaken for a record while the record holding it is intact).
 * - A candidate is valid only if its length is in 1..bodyBytesMax, the whole frame lies in the
 *   buffer, its CRC-32 matches and its body decodes as a record.
 * - The bad frame's own length is believed first: if a valid frame starts where it says it ends
 *   (or it ends exactly at the end of the data), the damage is inside that one record, and a
 *   frame inside it is accepted only when the stored CRC proves the length field was the damage
 *   (the CRC matches the bytes before the candidate under the length the candidate implies). So a
 *   bit flip in the body of a record whose value an attacker filled with forged frames resyncs past
 *   the whole record, not into the value. When the length itself is implausible, the same proof
 *   picks the record's true end among the candidates within one record's reach; only without a
 *   proof (header and more damaged at once) is the first valid frame taken. That is the residual
 *   risk: a burst that damages both the header and the body of a record whose value holds a
 *   forged frame could replay that frame (odds: one such burst in exactly that record, and a
 *   forged frame that passes CRC-32 and decodes).
 * - Cost: zero bytes and absurd lengths are rejected with one read per offset; a CRC is computed
 *   only for a plausible length; proofs cost O(log n) each (CRC-32 combine); the scan stops at the
 *   first proof, or after one record's reach. The worst case, a value that mimics a frame header
 *   at every offset, costs one candidate CRC per offset of that reach (at most recordBytesMax).
 */
import { crc32 } from "node:zlib";
import { FRAME_HEADER_BYTES, parseFrame } from "./framing.js";
import { decodeRecord, type LogRecord } from "./record.js";

const CRC_BYTES = 4;

/** Compared against in `nonZeroFrom`; never written to. */
const ZEROS = Buffer.alloc(64 * 1024);

/**
 * The offset of the first non-zero byte of `bufUntrusted` at or after `from`, or its length when
 * there is none. Compares whole 64 KiB runs at a time (memcmp), so a long zero tail costs little.
 */
export function nonZeroFrom(bufUntrusted: Buffer, from: number): number {
  const size = bufUntrusted.byteLength;
  let at = from;
  while (at < size) {
    const n = Math.min(ZEROS.byteLength, size - at);
    if (bufUntrusted.compare(ZEROS, 0, n, at, at + n) === 0) {
      at += n;
      continue;
    }
    while (bufUntrusted[at] === 0) at++;
    return at;
  }
  return size;
}

/**
 * Whether the log ends at `off` because a zero tail starts there: the frame header at `off` is all
 * zeros and so is every byte after it. A pre-zeroed segment (./segment-prepare.ts) ends so; a zero
 * header followed by anything else is no end but damage (a torn write, a flipped bit in the tail),
 * which the scan reports as usual.
 */
export function zeroTailAt(bufUntrusted: Buffer, off: number): boolean {
  return nonZeroFrom(bufUntrusted, off) === bufUntrusted.byteLength;
}

/** Whether a whole, valid, decodable record frame starts at `off`. */
export function validFrameAt(bufUntrusted: Buffer, off: number, bodyBytesMax: number): boolean {
  if (bufUntrusted.byteLength - off < FRAME_HEADER_BYTES + 1) return false;
  const length = bufUntrusted.readUInt32BE(off + CRC_BYTES);
  // The cheap rejection first: most offsets of zeros or random bytes fail here.
  if (length === 0 || length > bodyBytesMax || off + FRAME_HEADER_BYTES + length > bufUntrusted.byteLength) return false;
  const parsed = parseFrame(bufUntrusted, off, bodyBytesMax);
  if (parsed.kind !== "ok") return false;
  try {
    decodeRecord(parsed.body);
    return true;
  } catch {
    return false;
  }
}

/** Where the frame at `off` says it ends, if its length is plausible and it fits in the buffer. */
function declaredEnd(bufUntrusted: Buffer, off: number, bodyBytesMax: number): number | undefined {
  if (bufUntrusted.byteLength - off < FRAME_HEADER_BYTES) return undefined;
  const length = bufUntrusted.readUInt32BE(off + CRC_BYTES);
  if (length === 0 || length > bodyBytesMax) return undefined;
  const end = off + FRAME_HEADER_BYTES + length;
  return end <= bufUntrusted.byteLength ? end : undefined;
}

/**
 * CRC-32 arithmetic (zlib's crc32_combine): the CRC of A ++ B from crc(A), crc(B) and |B|, in
 * O(log |B|), so a candidate's proof below costs no rescan of the bytes before it.
 */
const POLY = 0xedb88320;
function multModP(a: number, b: number): number {
  let m = 0x80000000;
  let p = 0;
  for (;;) {
    if ((a & m) !== 0) {
      p ^= b;
      if ((a & (m - 1)) === 0) break;
    }
    m >>>= 1;
    b = b & 1 ? (b >>> 1) ^ POLY : b >>> 1;
  }
  return p >>> 0;
}
const X2N: number[] = [0x40000000];
for (let k = 1; k < 32; k++) X2N.push(multModP(X2N[k - 1]!, X2N[k - 1]!));
function crc32Combine(crcA: number, crcB: number, lengthB: number): number {
  let p = 0x80000000;
  for (let n = lengthB, k = 3; n > 0; n = Math.floor(n / 2), k++) if (n % 2 === 1) p = multModP(X2N[k & 31]!, p);
  return (multModP(p, crcA) ^ crcB) >>> 0;
}

/**
 * Proofs that the bad frame at `bad` is a whole record whose length field alone was damaged: for
 * a candidate end `c`, the stored CRC matches the bytes from `bad + 8` to `c` under the length
 * `c - bad - 8`. Candidates must be asked in increasing order (the body's CRC is kept running).
 */
function lengthProver(bufUntrusted: Buffer, bad: number, bodyBytesMax: number): (c: number) => boolean {
  const stored = bufUntrusted.readUInt32BE(bad);
  const bodyStart = bad + FRAME_HEADER_BYTES;
  let bodyCrc = 0;
  let crcAt = bodyStart;
  const lengthBytes = Buffer.allocUnsafe(4);
  return (c) => {
    const length = c - bodyStart;
    if (length <= 0 || length > bodyBytesMax) return false;
    bodyCrc = crc32(bufUntrusted.subarray(crcAt, c), bodyCrc);
    crcAt = c;
    lengthBytes.writeUInt32BE(length, 0);
    return crc32Combine(crc32(lengthBytes), bodyCrc, length) === stored;
  };
}

/**
 * The offset of the first valid record after the bad frame at `bad`, or undefined when none
 * follows (a torn tail, or damage up to the end of the data).
 */
export function resync(bufUntrusted: Buffer, bad: number, bodyBytesMax: number): number | undefined {
  const size = bufUntrusted.byteLength;
  const end = declaredEnd(bufUntrusted, bad, bodyBytesMax);
  // The record's own length is consistent with what follows: the damage is inside it, and a
  // frame inside it is believed only with the proof that the length field was what got damaged.
  const consistent = end !== undefined && (end === size || validFrameAt(bufUntrusted, end, bodyBytesMax));
  // Otherwise the header itself is damaged; the record ended at most one whole record later.
  const windowEnd = consistent ? end : Math.min(size, bad + FRAME_HEADER_BYTES + bodyBytesMax + 1);
  const proves = bad + FRAME_HEADER_BYTES <= size ? lengthProver(bufUntrusted, bad, bodyBytesMax) : () => false;
  let firstValid: number | undefined;
  for (let c = bad + 1; c < windowEnd; c++) {
    if (!validFrameAt(bufUntrusted, c, bodyBytesMax)) continue;
    if (proves(c)) return c;
    firstValid ??= c;
  }
  if (consistent) return end === size ? undefined : end;
  if (firstValid !== undefined) return firstValid;
  for (let c = windowEnd; c + FRAME_HEADER_BYTES < size; c++) {
    // A frame's length field is non-zero, so none starts more than 7 bytes before the next
    // non-zero byte: runs of zeros (a pre-zeroed tail) are skipped at memcmp speed.
    if (bufUntrusted.readUInt32BE(c + CRC_BYTES) === 0) {
      const skipTo = nonZeroFrom(bufUntrusted, c + CRC_BYTES) - FRAME_HEADER_BYTES + 1;
      if (skipTo > c) c = skipTo - 1;
      continue;
    }
    if (validFrameAt(bufUntrusted, c, bodyBytesMax)) return c;
  }
  return undefined;
}

/** A damaged range of a segment: skipped by replay, carried as raw bytes by sealing. */
export interface DamagedRange {
  off: number;
  bytes: number;
  reason: string;
}

/** Why the frame at `off` is bad, for reports (the frame is known not to be valid). */
export function badFrameReason(bufUntrusted: Buffer, off: number, bodyBytesMax: number): string {
  const parsed = parseFrame(bufUntrusted, off, bodyBytesMax);
  if (parsed.kind === "corrupt") return parsed.reason;
  if (parsed.kind === "incomplete") return `incomplete record (${parsed.needBytes} bytes needed, ${bufUntrusted.byteLength - off} left)`;
  try {
    decodeRecord(parsed.body);
    return "valid record";
  } catch (err) {
    return `a whole record that does not decode (${(err as Error).message})`;
  }
}

/** One step of `scanRecords`; offsets are relative to the scanned buffer. */
export type ScanStep =
  | { kind: "record"; off: number; next: number; rec: LogRecord }
  /** `next` is where the next valid record starts, undefined when nothing valid follows. */
  | { kind: "damaged"; off: number; next: number | undefined; reason: string };

/**
 * Walks `bufUntrusted` from `from` to its end: each whole record that decodes, and each damaged
 * range, in order. After a damaged range with nothing valid after it the walk ends; a caller that
 * stops early (a torn tail it cuts) simply stops iterating. With `zeroTailIsEnd` (local segment
 * files, which may be pre-zeroed), a zero tail (`zeroTailAt`) at a record boundary ends the walk
 * as the end of the data does; without it (sealed segments, which never have one) zeros are
 * damage like any other bytes.
 */
export function* scanRecords(bufUntrusted: Buffer, from: number, bodyBytesMax: number, opts: { zeroTailIsEnd?: boolean } = {}): Generator<ScanStep, void> {
  let off = from;
  while (off < bufUntrusted.byteLength) {
    if (opts.zeroTailIsEnd && bufUntrusted[off] === 0 && zeroTailAt(bufUntrusted, off)) return;
    const parsed = parseFrame(bufUntrusted, off, bodyBytesMax);
    let rec: LogRecord | undefined;
    if (parsed.kind === "ok") {
      try {
        rec = decodeRecord(parsed.body);
      } catch {
        // A whole record that does not decode (a faulty or newer writer) is damage like any
        // other: a range to skip, never a reason to stop, so the records after it are kept.
      }
    }
    if (parsed.kind !== "ok" || rec === undefined) {
      const next = resync(bufUntrusted, off, bodyBytesMax);
      yield { kind: "damaged", off, next, reason: badFrameReason(bufUntrusted, off, bodyBytesMax) };
      if (next === undefined) return;
      off = next;
      continue;
    }
    yield { kind: "record", off, next: parsed.next, rec };
    off = parsed.next;
  }
}

/**
 * Where the records of a local segment's bytes end (`from` on, walking as `scanRecords` does with
 * `zeroTailIsEnd`), and whether a zero tail starts there. Damage is walked past as the scan does.
 */
export function recordsEnd(bufUntrusted: Buffer, from: number, bodyBytesMax: number): { end: number; zeroTail: boolean } {
  let end = from;
  for (const step of scanRecords(bufUntrusted, from, bodyBytesMax, { zeroTailIsEnd: true })) {
    end = step.kind === "record" ? step.next : (step.next ?? bufUntrusted.byteLength);
  }
  return { end, zeroTail: end < bufUntrusted.byteLength && zeroTailAt(bufUntrusted, end) };
}

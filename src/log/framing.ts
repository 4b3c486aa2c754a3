/**
 * Record framing of the segment log: `[u32 bodyLength][u32 crc][body]`, big-endian.
 *
 * The CRC (zlib's CRC-32) covers the four length bytes and then the body, so a torn or flipped
 * length is caught as surely as a flipped body byte. Framing is pure: `frame` builds bytes,
 * `parseFrame` classifies the bytes at an offset as a whole valid record, an incomplete one (the
 * buffer ends inside it) or a corrupt one. Recovery treats "incomplete" and "corrupt" at the tail
 * of the active segment alike: the tail is cut there.
 */
import { crc32 } from "node:zlib";

export const FRAME_HEADER_BYTES = 8;

export function frameCrc(lengthBytes: Uint8Array, body: Uint8Array): number {
  return crc32(body, crc32(lengthBytes));
}

/** Writes the frame of `body` into `out` at `offset`; returns the offset after it. */
export function writeFrame(out: Buffer, offset: number, body: Uint8Array): number {
  out.writeUInt32BE(body.byteLength, offset);
  const crc = frameCrc(out.subarray(offset, offset + 4), body);
  out.writeUInt32BE(crc, offset + 4);
  out.set(body, offset + FRAME_HEADER_BYTES);
  return offset + FRAME_HEADER_BYTES + body.byteLength;
}

export function frame(body: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + body.byteLength);
  writeFrame(out, 0, body);
  return out;
}

export type ParsedFrame =
  | { kind: "ok"; body: Buffer; next: number }
  | { kind: "incomplete"; needBytes: number }
  | { kind: "corrupt"; reason: string };

/**
 * Classifies the bytes of `bufUntrusted` at `offset`. `bodyBytesMax` rejects absurd lengths
 * before they are trusted (a corrupt length must not make a reader allocate gigabytes).
 */
export function parseFrame(bufUntrusted: Buffer, offset: number, bodyBytesMax: number): ParsedFrame {
  const available = bufUntrusted.byteLength - offset;
  if (available < FRAME_HEADER_BYTES) return { kind: "incomplete", needBytes: FRAME_HEADER_BYTES };
  const length = bufUntrusted.readUInt32BE(offset);
  if (length === 0 || length > bodyBytesMax) {
    return { kind: "corrupt", reason: `record length ${length} is outside 1..${bodyBytesMax}` };
  }
  if (available < FRAME_HEADER_BYTES + length) return { kind: "incomplete", needBytes: FRAME_HEADER_BYTES + length };
  const stored = bufUntrusted.readUInt32BE(offset + 4);
  const body = bufUntrusted.subarray(offset + FRAME_HEADER_BYTES, offset + FRAME_HEADER_BYTES + length);
  const actual = frameCrc(bufUntrusted.subarray(offset, offset + 4), body);
  if (stored !== actual) return { kind: "corrupt", reason: `checksum mismatch (stored ${stored}, computed ${actual})` };
  return { kind: "ok", body, next: offset + FRAME_HEADER_BYTES + length };
}

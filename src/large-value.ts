/**
 * Values larger than one chunk are written ahead as chunk records and then made visible by the
 * one set record that lists them. A crash, an error or a failed condition between the two leaves
 * only unreferenced chunks, which no read can reach and compaction drops.
 * Depends on the `Engine` (./engine.ts) only: the group commit, the limits, and marking chunks dead.
 */
import { StrataError } from "./errors.js";
import type { Pointer } from "./log/record.js";
import type { Engine } from "./engine.js";

export interface ValueParts {
  value: Uint8Array;
  size: number;
  chunks?: Pointer[];
}

const EMPTY = new Uint8Array(0);

async function writeChunk(engine: Engine, data: Uint8Array): Promise<Pointer> {
  const { committed } = await engine.submit({ op: "chunk", data });
  if (!committed) throw new StrataError("INTERNAL", "a chunk record was not written");
  return committed.ptr;
}

/**
 * A value that fits one record stays inline, and is returned synchronously so that the write is
 * queued within the caller's call: writes issued one after another commit in that order.
 */
export function inlineParts(engine: Engine, value: Uint8Array): ValueParts | undefined {
  return value.byteLength <= engine.limits.chunkBytes ? { value, size: value.byteLength } : undefined;
}

/** Splits a value already in memory into chunk records (large values only). */
export async function valueParts(engine: Engine, value: Uint8Array): Promise<ValueParts> {
  const chunkBytes = engine.limits.chunkBytes;
  if (value.byteLength <= chunkBytes) return { value, size: value.byteLength };
  const writes: Array<Promise<Pointer>> = [];
  for (let at = 0; at < value.byteLength; at += chunkBytes) writes.push(writeChunk(engine, value.subarray(at, at + chunkBytes)));
  const settled = await Promise.allSettled(writes);
  const failed = settled.find((s) => s.status === "rejected");
  if (failed) {
    // Some chunks were written before one failed (e.g. a full disk): they will never be referenced.
    engine.abandonChunks(settled.flatMap((s) => (s.status === "fulfilled" ? [s.value] : [])));
    throw failed.reason;
  }
  return { value: EMPTY, size: value.byteLength, chunks: settled.map((s) => (s as PromiseFulfilledResult<Pointer>).value) };
}

/**
 * Writes a value that arrives in pieces (e.g. chunks of a NATS upload) with memory bounded by one
 * chunk, whatever the value's size. Enforces `valueBytesMax` as bytes arrive.
 */
export async function valuePartsFrom(engine: Engine, source: AsyncIterable<Uint8Array>): Promise<ValueParts> {
  const chunks: Pointer[] = [];
  try {
    return await gatherParts(engine, source, chunks);
  } catch (err) {
    // An abandoned upload, a value over the limit: its chunks will never be referenced.
    engine.abandonChunks(chunks);
    throw err;
  }
}

async function gatherParts(engine: Engine, source: AsyncIterable<Uint8Array>, chunks: Pointer[]): Promise<ValueParts> {
  const { chunkBytes, valueBytesMax } = engine.limits;
  let buffered: Uint8Array[] = [];
  let bufferedBytes = 0;
  let size = 0;
  const flushFull = async () => {
    while (bufferedBytes >= chunkBytes) {
      const all = Buffer.concat(buffered, bufferedBytes);
      chunks.push(await writeChunk(engine, all.subarray(0, chunkBytes)));
      const rest = all.subarray(chunkBytes);
      buffered = rest.byteLength > 0 ? [rest] : [];
      bufferedBytes = rest.byteLength;
    }
  };
  for await (const piece of source) {
    if (!(piece instanceof Uint8Array)) throw new StrataError("INVALID_ARGUMENT", "a value stream must yield Uint8Array pieces");
    size += piece.byteLength;
    if (size > valueBytesMax) {
      throw new StrataError("TOO_LARGE", `the value exceeds valueBytesMax (${valueBytesMax} bytes); nothing was made visible`);
    }
    buffered.push(piece);
    bufferedBytes += piece.byteLength;
    // Keep one extra chunk buffered so a value of exactly chunkBytes can still go inline.
    if (bufferedBytes > chunkBytes) await flushFull();
  }
  const rest = Buffer.concat(buffered, bufferedBytes);
  if (chunks.length === 0 && rest.byteLength <= chunkBytes) return { value: rest, size };
  if (rest.byteLength > 0) chunks.push(await writeChunk(engine, rest));
  return { value: EMPTY, size, chunks };
}

/**
 * Steps 1–2 of a compaction (docs/compaction.md): reads a run's inputs in log order (a local file,
 * else the object fetched whole and unsealed; one input in memory at a time), decides each record
 * (./index/compact-switch.ts `decide`), and appends the kept ones to the output
 * (./log/compact-writer.ts): frames copied as they are, a set record whose chunks lie in the run
 * preceded by copies of those chunks and rewritten with their new pointers. Works in slices with a
 * turn of the event loop and the byte-rate limit between them, and stops when asked to.
 *
 * Invariant: a damaged input stops the run (`RunSkipped`) and is remembered in `damaged`: damaged
 * ranges are evidence, never rewritten away.
 */
import fs from "node:fs";
import { StrataError } from "./errors.js";
import type { CompactDropped, CompactProgress } from "./compact-api.js";
import { emptyDropped } from "./compact-api.js";
import type { ByteRate, Run } from "./compact-policy.js";
import { decide, keptKind, type DroppedRev, type Kept } from "./index/compact-switch.js";
import { isForeign } from "./index/foreign-logs.js";
import type { LmdbIndex } from "./index/lmdb-index.js";
import type { Limits } from "./limits.js";
import type { OutputWriter } from "./log/compact-writer.js";
import { scanRecords } from "./log/frame-scan.js";
import { frame } from "./log/framing.js";
import { decodeRecord, encodeRecord, type Pointer } from "./log/record.js";
import { SEGMENT_HEADER_BYTES, checkSegmentHeader, segmentPath } from "./log/segment-files.js";
import type { SegmentLog } from "./log/segment-log.js";
import { unsealSegmentAsync } from "./tier/sealed-segment.js";
import { segmentKey } from "./tier/segment-keys.js";
import type { Tier } from "./tier/tier.js";

/** Reads of an input object before a checksum failure counts as damage at rest. */
const INPUT_READ_ATTEMPTS = 2;

/** Input bytes processed between two turns of the event loop. */
const SLICE_BYTES = 64 * 1024;

/**
 * The buffer local inputs are read into, kept for the inputs of one compaction call. Fresh memory
 * is expensive to touch on some machines (page faults on first use: on the development VM a new
 * 64 MiB buffer costs ~200 ms to read into and makes checksumming it 4× slower), so one buffer is
 * reused rather than one allocated per input. `release` lets it go between calls.
 */
export class ScratchBuffer {
  private buf: Buffer | undefined;

  /** A buffer of at least `bytes` (its contents are garbage until read into). */
  take(bytes: number): Buffer {
    if (this.buf === undefined || this.buf.byteLength < bytes) this.buf = Buffer.allocUnsafeSlow(bytes);
    return this.buf;
  }

  release(): void {
    this.buf = undefined;
  }
}

/** A run given up without harm (its output, if any, is removed); the inputs stay as they were. */
export class RunSkipped extends Error {}

export interface Scanned {
  kept: Kept[];
  dropped: DroppedRev[];
  outSpan: Set<number>;
  dropped_: CompactDropped;
  droppedBytes: number;
  keptRecords: number;
}

/** The parts of a store every step of a compaction works on (the rewrite, the reclaim, the compactor). */
export interface CompactParts {
  index: LmdbIndex;
  log: SegmentLog;
  segmentsDir: string;
  limits: Limits;
  serverId: string;
  clock: () => number;
  tier: Tier | undefined;
}

export class RunRewriter {
  constructor(
    private readonly d: CompactParts,
    private readonly rate: ByteRate,
    private readonly damaged: Set<number>,
    private readonly stopped: () => boolean,
    private readonly scratch: ScratchBuffer = new ScratchBuffer(),
  ) {}

  /** Steps 1–2: reads the run's inputs in order and writes the kept records to `writer`. */
  async rewrite(run: Run, writer: OutputWriter, onProgress?: (p: CompactProgress) => void): Promise<Scanned> {
    const { index, limits } = this.d;
    const s: Scanned = { kept: [], dropped: [], outSpan: new Set(), dropped_: emptyDropped(), droppedBytes: 0, keptRecords: 0 };
    const inputs = new Set(run.inputs.map((i) => i.id));
    /** Chunk frames of the run not yet claimed by a kept set record: "seg:off" → frame length. */
    const unclaimed = new Map<string, number>();
    const now = this.d.clock();
    const total = run.bytes;
    let done = 0;
    for (const input of run.inputs) {
      // The writer holds views of the previous input's frames until it flushes, and the next
      // input is read into the same buffer.
      await writer.flush();
      const buf = await this.readInput(input.id);
      checkSegmentHeader(input.id, buf.subarray(0, SEGMENT_HEADER_BYTES));
      let slice = 0;
      // An input whose seal has not cut its zero tail yet (moments after a roll) ends at it.
      for (const step of scanRecords(buf, SEGMENT_HEADER_BYTES, limits.recordBytesMax, { zeroTailIsEnd: true })) {
        if (step.kind === "damaged") {
          this.damaged.add(input.id);
          throw new RunSkipped(`segment ${input.id} has a damaged range at offset ${step.off} (${step.reason}); it is left as it is`);
        }
        const ptr: Pointer = { seg: input.id, off: step.off, len: step.next - step.off };
        const rec = step.rec;
        if (rec.t === "chunk") {
          unclaimed.set(`${ptr.seg}:${ptr.off}`, ptr.len);
        } else {
          const v = decide(index, rec, ptr, now, limits.dedupWindowMs);
          if (v.keep) {
            let bytes = buf.subarray(step.off, step.next);
            if ((rec.t === "sset" || rec.t === "kset") && rec.chunks) {
              const moved: Pointer[] = [];
              let changed = false;
              for (const c of rec.chunks) {
                if (!inputs.has(c.seg)) {
                  moved.push(c);
                  if (!isForeign(c.seg)) s.outSpan.add(c.seg);
                  continue;
                }
                const key = `${c.seg}:${c.off}`;
                const f = c.seg === input.id && unclaimed.get(key) === c.len ? buf.subarray(c.off, c.off + c.len) : await this.chunkFrame(c);
                unclaimed.delete(key);
                moved.push(writer.append(f));
                s.keptRecords++;
                changed = true;
              }
              if (changed) bytes = frame(encodeRecord({ ...rec, chunks: moved }));
            }
            const neu = writer.append(bytes);
            s.keptRecords++;
            const kept: Kept = { kind: keptKind(rec), locId: v.locId, seq: rec.t === "sset" ? rec.seq : 0, key: rec.t === "kset" ? rec.key : "", rev: "rev" in rec ? (rec.rev ?? 0) : 0, oldSeg: ptr.seg, oldOff: ptr.off, neu };
            s.kept.push(kept);
          } else {
            s.dropped_[v.why]++;
            s.droppedBytes += ptr.len;
            if ("rev" in rec && rec.rev) s.dropped.push({ locId: v.locId, rev: rec.rev, oldSeg: ptr.seg, oldOff: ptr.off } satisfies DroppedRev);
          }
        }
        slice += ptr.len;
        if (slice >= SLICE_BYTES) {
          done += slice;
          await this.turn(slice, writer);
          slice = 0;
          onProgress?.({ phase: "write", segment: input.id, bytesDone: done, bytesTotal: total });
        }
      }
      done += slice;
      await this.turn(slice, writer);
      onProgress?.({ phase: "scan", segment: input.id, bytesDone: done, bytesTotal: total });
    }
    // Chunks no kept set record of the run listed: of dropped values, or abandoned (runs never end
    // between a chunk and its set record, compact-policy.ts).
    for (const len of unclaimed.values()) {
      s.dropped_.chunks++;
      s.droppedBytes += len;
    }
    return s;
  }

  /** Rate limit, buffered writes and a turn of the event loop between slices; gives up when closing. */
  private async turn(readBytes: number, writer: OutputWriter): Promise<void> {
    if (this.stopped()) throw new RunSkipped("the store is closing");
    let bytes = readBytes;
    if (writer.full) {
      bytes += writer.size;
      await writer.flush();
    }
    await this.rate.take(bytes, () => this.stopped());
    await new Promise<void>((resolve) => setImmediate(resolve));
  }

  /** An input's raw bytes: the local file, else the object fetched whole and unsealed. */
  private async readInput(seg: number): Promise<Buffer> {
    try {
      return await this.readLocal(segmentPath(this.d.segmentsDir, seg));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT" || !this.d.tier) throw err;
    }
    // Read twice before calling it damaged: a flipped bit may have been in transit, not at rest
    // (as checkpoint reads do).
    for (let attempt = 1; ; attempt++) {
      const obj = await this.d.tier.objects.get(segmentKey(this.d.serverId, seg));
      if (!obj) throw new RunSkipped(`segment ${seg} is neither on the local disk nor in the object store`);
      try {
        // Unsealed with turns of the event loop between blocks: a whole object is tens of MiB.
        return await unsealSegmentAsync(seg, obj);
      } catch (err) {
        if (attempt >= INPUT_READ_ATTEMPTS || !StrataError.is(err, "CORRUPT")) throw err;
      }
    }
  }

  /** A local segment file, whole, into the scratch buffer (a view of exactly its bytes). */
  private async readLocal(file: string): Promise<Buffer> {
    const fh = await fs.promises.open(file, "r");
    try {
      const size = (await fh.stat()).size;
      const buf = this.scratch.take(size);
      let done = 0;
      while (done < size) {
        const { bytesRead } = await fh.read(buf, done, size - done, done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return buf.subarray(0, done);
    } finally {
      await fh.close();
    }
  }

  /** The frame of a chunk record in an earlier input of the run, read and verified. */
  private async chunkFrame(c: Pointer): Promise<Buffer> {
    const { tier } = this.d;
    const body = tier && !tier.isLocal(c.seg) ? await tier.readBody(c) : this.readLocalBody(c);
    if (decodeRecord(body).t !== "chunk") throw new RunSkipped(`a set record lists a chunk at segment ${c.seg} offset ${c.off} that is not a chunk record`);
    return frame(body);
  }

  private readLocalBody(c: Pointer): Buffer {
    try {
      return this.d.log.readBody(c);
    } catch (err) {
      throw new RunSkipped(`the chunk at segment ${c.seg} offset ${c.off} cannot be read (${(err as Error).message})`);
    }
  }
}

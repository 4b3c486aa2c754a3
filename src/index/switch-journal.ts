/**
 * The journal of a compaction's switch (docs/compaction.md, step 4): the plan the switch carries
 * out in chunks, kept in the index itself (`sys` rows under "switch/"), so that a crash between
 * two chunks is finished from it at the next open or compaction.
 *
 * Why in the index and not in a file beside the output: the journal's header is written in the same
 * transaction that makes the output "switching" and is removed in the one that ends the switch,
 * so an output is "switching" exactly while its header exists (no state without its journal, no
 * stale journal after it); a tier checkpoint (a snapshot of the index, taken at any moment) carries
 * it, so an index restored from a checkpoint taken between two chunks finishes the switch too; and
 * it needs no fsync of its own (the index's durability: a process crash keeps every committed
 * transaction, an OS crash has the index rebuilt from the log, where the markers decide).
 *
 * Layout:
 * - `switch/<out hex16>/<n hex8>`: piece n, a list of tuples (one chunk's work): pieces
 *   0 .. kept-1 hold kept records `[kind, locId, seq|key, rev, oldSeg, oldOff, newOff, newLen]`,
 *   the others dropped revisions `[locId, rev, oldSeg, oldOff]`. Written before the header, each in
 *   its own small transaction (pieces without a header are leftovers of a switch that never began:
 *   removed by `dropJournal`); each is removed by the chunk transaction that carries it out.
 * - `switch/<out hex16>`: the header (`SwitchHeader`), with `done`, the pieces carried out so far
 *   (advanced in the same transaction as their changes, so a chunk is never applied twice).
 */
import { assert } from "../assert.js";
import type { Cover } from "../log/segment-set.js";
import type { LmdbIndex, SegmentState } from "./lmdb-index.js";

const PREFIX = "switch/";
/** Past every key under PREFIX ('0' follows '/'). */
const END = "switch0";

export interface SwitchHeader {
  out: Cover;
  /** Raw bytes of the output file, and of its sealed object (0 without a tier). */
  outBytes: number;
  sealedBytes: number;
  /** The output's state once switched: "uploaded" with a tier, else "sealed". */
  outState: SegmentState;
  /** Input ids, in log order, with their raw bytes. */
  inputs: Array<{ id: number; bytes: number }>;
  /** Other own segments holding chunks of kept set records (the output's chunk span). */
  outSpan: number[];
  /** Pieces of kept records, then of dropped revisions. */
  keptPieces: number;
  droppedPieces: number;
  /** Pieces carried out. */
  done: number;
}

export const KEPT_KINDS = ["sset", "kset", "tomb", "config"] as const;
export type JournalKind = (typeof KEPT_KINDS)[number];
/** A kept record as the journal holds it: kind, locId, seq (stream) or key (kv), rev, old place, new offset and length. */
export type KeptTuple = [kind: number, locId: number, seqOrKey: number | string, rev: number, oldSeg: number, oldOff: number, newOff: number, newLen: number];
export type DroppedTuple = [locId: number, rev: number, oldSeg: number, oldOff: number];

const hex = (n: number, w: number) => n.toString(16).padStart(w, "0");
const headerKey = (out: number) => `${PREFIX}${hex(out, 16)}`;
const pieceKey = (out: number, n: number) => `${PREFIX}${hex(out, 16)}/${hex(n, 8)}`;

/**
 * Writes the pieces (each in its own transaction, with `turn()` between them, so the event loop
 * is not held for the whole list); returns the header for the switch's first transaction.
 */
export async function writeJournalPieces<K, D>(
  index: LmdbIndex,
  header: Omit<SwitchHeader, "keptPieces" | "droppedPieces" | "done">,
  kept: { list: readonly K[]; tuples: (slice: readonly K[]) => KeptTuple[] },
  dropped: { list: readonly D[]; tuples: (slice: readonly D[]) => DroppedTuple[] },
  perPiece: number,
  turn: () => Promise<void>,
): Promise<SwitchHeader> {
  assert(perPiece >= 1, "a journal piece holds at least one tuple");
  dropJournal(index, header.out.id);
  let n = 0;
  // Turned into tuples a piece at a time (a whole run's list at once holds the event loop).
  const put = async <T>(list: readonly T[], tuples: (slice: readonly T[]) => unknown[]) => {
    for (let i = 0; i < list.length; i += perPiece) {
      const piece = tuples(list.slice(i, i + perPiece));
      if (piece.length === 0) continue;
      const key = pieceKey(header.out.id, n++);
      index.write(() => index.sys.put(key, piece));
      await turn();
    }
  };
  await put(kept.list, kept.tuples);
  const keptPieces = n;
  await put(dropped.list, dropped.tuples);
  return { ...header, keptPieces, droppedPieces: n - keptPieces, done: 0 };
}

export function readHeader(index: LmdbIndex, out: number): SwitchHeader | undefined {
  return index.sys.get(headerKey(out)) as SwitchHeader | undefined;
}

/** Inside a write transaction: the header (the output becomes "switching" in the same one). */
export function putHeader(index: LmdbIndex, h: SwitchHeader): void {
  index.sys.put(headerKey(h.out.id), h);
}

/** Inside a write transaction: piece `n` (undefined when already carried out and removed). */
export function takePiece(index: LmdbIndex, out: number, n: number): unknown[] | undefined {
  const key = pieceKey(out, n);
  const piece = index.sys.get(key) as unknown[] | undefined;
  if (piece !== undefined) index.sys.remove(key);
  return piece;
}

/** Inside a write transaction: the header goes (the switch is over). */
export function removeHeader(index: LmdbIndex, out: number): void {
  index.sys.remove(headerKey(out));
}

/** Outputs whose switch began and is not finished, ascending. */
export function pendingSwitches(index: LmdbIndex): number[] {
  const out: number[] = [];
  for (const key of index.sys.getKeys({ start: PREFIX, end: END })) {
    const rest = String(key).slice(PREFIX.length);
    if (!rest.includes("/")) out.push(Number.parseInt(rest, 16));
  }
  return out.sort((a, b) => a - b);
}

/** Removes every journal row of `out` (pieces of a switch that never began, or was refused). */
export function dropJournal(index: LmdbIndex, out: number): void {
  const start = headerKey(out);
  const keys = [...index.sys.getKeys({ start, end: `${start}0` })].filter((k) => k === start || String(k).startsWith(`${start}/`));
  if (keys.length > 0) index.write(() => keys.forEach((k) => index.sys.remove(k)));
}

/** Removes the pieces no header owns (a switch that never began: its output is an orphan). */
export function dropStrayPieces(index: LmdbIndex): number {
  const owned = new Set(pendingSwitches(index).map((id) => headerKey(id)));
  const stray: string[] = [];
  for (const key of index.sys.getKeys({ start: PREFIX, end: END })) {
    const k = String(key);
    const slash = k.indexOf("/", PREFIX.length);
    if (slash > 0 && !owned.has(k.slice(0, slash))) stray.push(k);
  }
  if (stray.length > 0) index.write(() => stray.forEach((k) => index.sys.remove(k)));
  return stray.length;
}

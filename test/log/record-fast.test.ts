/**
 * The in-place reader of stream set records (src/log/record-fast.ts) against `decodeRecord`:
 * whatever the bytes (valid records of every shape, damaged ones, arbitrary ones shaped like a
 * record), it returns exactly decodeRecord's record or nothing, never something decodeRecord
 * rejects; and it does read the common record (the scans' fast path is taken).
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { decodeRecord, encodeRecord, type StreamSetRecord } from "../../src/log/record.js";
import { decodeStreamSetFast, locationBytes } from "../../src/log/record-fast.js";

const LOC = "acct/alice/chat";
const LOC_BYTES = locationBytes(LOC)!;

/** decodeRecord's verdict: the record, or "rejected". */
function reference(body: Uint8Array): unknown {
  try {
    return decodeRecord(body);
  } catch {
    return "rejected";
  }
}

/** The property: the fast path gives decodeRecord's record, or leaves the bytes to it. */
function agrees(body: Uint8Array): boolean {
  const fast = decodeStreamSetFast(body, LOC, LOC_BYTES);
  if (fast === undefined) return true;
  expect(fast).toStrictEqual(reference(body));
  return true;
}

const int = fc.oneof(fc.nat(30), fc.constantFrom(23, 24, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 1_764_550_000_000, Number.MAX_SAFE_INTEGER), fc.maxSafeNat());
const record = fc
  .record({
    loc: fc.oneof(fc.constant(LOC), fc.constant("acct/alice/chaT"), fc.constant("acct/alice/cha"), fc.string({ maxLength: 20 })),
    seq: int,
    revDelta: fc.oneof(fc.nat(5), fc.nat(100_000)),
    ts: int,
    value: fc.uint8Array({ maxLength: 2000 }),
    headers: fc.option(fc.dictionary(fc.string({ minLength: 1, maxLength: 5 }), fc.string({ maxLength: 5 }), { minKeys: 1, maxKeys: 3 }), { nil: undefined }),
    msgId: fc.option(fc.string({ maxLength: 8 }), { nil: undefined }),
    atDelta: fc.option(fc.nat(1000), { nil: undefined }),
  })
  .filter((r) => Number.isSafeInteger(r.seq + r.revDelta) && Number.isSafeInteger(r.ts + (r.atDelta ?? 0)))
  .map((r): StreamSetRecord => {
    const rec: StreamSetRecord = { t: "sset", loc: r.loc, seq: r.seq, rev: r.seq + r.revDelta, ts: r.ts, value: r.value, size: r.value.byteLength };
    if (r.headers) rec.headers = r.headers;
    if (r.msgId !== undefined) rec.msgId = r.msgId;
    if (r.atDelta !== undefined) rec.at = r.ts + r.atDelta;
    return rec;
  });

describe("decodeStreamSetFast", () => {
  it("reads a plain record of the location exactly as decodeRecord does", () => {
    fc.assert(
      fc.property(record, (rec) => {
        const body = encodeRecord(rec);
        const fast = decodeStreamSetFast(body, LOC, LOC_BYTES);
        const plain = rec.loc === LOC && rec.headers === undefined && rec.msgId === undefined && rec.at === undefined;
        // The fast path is taken for every plain record of the location, and only for those.
        expect(fast !== undefined).toBe(plain);
        if (fast) expect(fast).toStrictEqual(decodeRecord(body));
      }),
      { numRuns: 500 },
    );
  });

  it("never accepts damaged bytes that decodeRecord would reject or read otherwise", () => {
    const damage = fc.oneof(
      fc.record({ kind: fc.constant("flip" as const), at: fc.nat(), xor: fc.integer({ min: 1, max: 255 }) }),
      // Most fields are in the first bytes: flip those often, a major type bit (0x20, 0x40, 0x80) too.
      fc.record({ kind: fc.constant("flip" as const), at: fc.nat(30), xor: fc.constantFrom(0x20, 0x40, 0x80, 0x01, 0x1f) }),
      fc.record({ kind: fc.constant("cut" as const), at: fc.nat() }),
      fc.record({ kind: fc.constant("append" as const), extra: fc.uint8Array({ minLength: 1, maxLength: 3 }) }),
    );
    fc.assert(
      fc.property(record, fc.array(damage, { minLength: 1, maxLength: 3 }), (rec, damages) => {
        let body = Buffer.from(encodeRecord({ ...rec, loc: LOC }));
        for (const d of damages) {
          if (d.kind === "flip") body[d.at % body.length] ^= d.xor;
          else if (d.kind === "cut") body = body.subarray(0, d.at % body.length);
          else body = Buffer.concat([body, d.extra]);
        }
        return agrees(body);
      }),
      { numRuns: 3000 },
    );
  });

  it("agrees after any one-byte change of the fields, tried exhaustively", () => {
    const shapes = [
      { seq: 5, rev: 500, ts: 7, value: new Uint8Array(3) },
      { seq: 70_000, rev: 70_000, ts: 1_764_550_000_000, value: new Uint8Array(30).fill(9) },
      { seq: 2 ** 40, rev: 2 ** 40 + 1, ts: 2 ** 32 - 1, value: new Uint8Array(300) },
    ];
    for (const shape of shapes) {
      const valid = Buffer.from(encodeRecord({ t: "sset", loc: LOC, ...shape, size: shape.value.byteLength }));
      expect(decodeStreamSetFast(valid, LOC, LOC_BYTES)).toStrictEqual(decodeRecord(valid));
      for (let at = 0; at < Math.min(valid.length, 40); at++) {
        for (const xor of [0x01, 0x02, 0x1f, 0x20, 0x40, 0x60, 0x80, 0xe0, 0xff]) {
          const body = Buffer.from(valid);
          body[at]! ^= xor;
          agrees(body);
        }
      }
    }
  });

  it("agrees on arbitrary bytes shaped like a stream set record", () => {
    const header = Buffer.from([0x86, 0x01, 0x6f, ...LOC_BYTES]);
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 40 }), (tail) => agrees(Buffer.concat([header, tail]))),
      { numRuns: 3000 },
    );
  });

  it("leaves a location UTF-8 cannot carry as it is to decodeRecord", () => {
    expect(locationBytes("a\ud800b")).toBeUndefined();
    expect(locationBytes("naïve/日本")).toEqual(Buffer.from("naïve/日本"));
  });
});

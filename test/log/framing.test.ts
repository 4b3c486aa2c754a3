/**
 * Record framing and record encoding, byte by byte (STYLE.md habit 9): every record type round
 * trips; a frame cut at any offset is "incomplete", never "ok"; any single flipped bit is caught;
 * a buffer fed one byte at a time yields exactly the frames that are complete; absurd lengths are
 * refused before anything is allocated; and no input makes `decodeRecord` throw anything but a
 * CORRUPT StrataError.
 */
import { encode } from "cbor-x";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { FRAME_HEADER_BYTES, FrameChunks, frame, parseFrame, writeFrame } from "../../src/log/framing.js";
import { decodeRecord, encodeRecord, type LogRecord, type Pointer } from "../../src/log/record.js";

const BODY_MAX = 1024 * 1024;

const nat = fc.maxSafeNat();
const loc = fc.stringMatching(/^[-_=a-zA-Z0-9]{1,12}(\/[-_=a-zA-Z0-9]{1,12}){0,3}$/);
const key = fc.stringMatching(/^[-/_=.a-zA-Z0-9]{1,40}$/);
const bytes = fc.uint8Array({ maxLength: 300 });
const headers = fc.dictionary(fc.stringMatching(/^[a-zA-Z][-a-zA-Z0-9]{0,15}$/), fc.string({ maxLength: 40 }), { maxKeys: 5, noNullPrototype: true });
const pointer: fc.Arbitrary<Pointer> = fc.record({ seg: nat, off: nat, len: nat });
const chunks = fc.array(pointer, { minLength: 1, maxLength: 5 });

/** A value, or a chunk list (then the inline value is empty: it is not encoded). */
const valueParts = fc.oneof(
  bytes.map((value) => ({ value, size: value.byteLength })),
  fc.tuple(chunks, nat).map(([c, size]) => ({ value: new Uint8Array(0), chunks: c, size })),
);

const recordArb: fc.Arbitrary<LogRecord> = fc.oneof(
  fc
    .record({ loc, seq: nat, rev: nat, ts: nat, parts: valueParts, headers: fc.option(headers, { nil: undefined }), msgId: fc.option(fc.string({ minLength: 1, maxLength: 30 }), { nil: undefined }) })
    .map(({ parts, headers: h, msgId, ...r }) => strip({ t: "sset" as const, ...r, ...parts, headers: h, msgId })),
  fc.record({ loc, seq: nat, rev: nat, ts: nat }).map((r) => ({ t: "sdel" as const, ...r })),
  fc.record({ loc, endSeq: nat, rev: nat, ts: nat }).map((r) => ({ t: "sdelall" as const, ...r })),
  fc
    .record({ loc, key, rev: nat, ts: nat, parts: valueParts, headers: fc.option(headers, { nil: undefined }), expiresAt: fc.option(nat, { nil: undefined }) })
    .map(({ parts, headers: h, expiresAt, ...r }) => strip({ t: "kset" as const, ...r, ...parts, headers: h, expiresAt })),
  fc.record({ loc, key, rev: nat, ts: nat, expired: fc.boolean() }).map(({ expired, ...r }) => strip({ t: "kdel" as const, ...r, expired: expired ? true : undefined })),
  bytes.map((data) => ({ t: "chunk" as const, data })),
);

/** Drops undefined optional fields, as the decoder never produces them. */
function strip<T extends object>(r: T): T {
  return Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined)) as T;
}

/** Byte arrays as hex, so Buffer vs Uint8Array does not matter to the comparison. */
function comparable(r: LogRecord): unknown {
  const hex = (b: Uint8Array) => `hex:${Buffer.from(b).toString("hex")}`;
  const isBufferJson = (v: unknown): v is { data: number[] } => typeof v === "object" && v !== null && (v as { type?: unknown }).type === "Buffer";
  // Buffer#toJSON runs before the replacer, so Buffers arrive as { type: "Buffer", data }.
  return JSON.parse(JSON.stringify(r, (_k, v: unknown) => (v instanceof Uint8Array ? hex(v) : isBufferJson(v) ? hex(Uint8Array.from(v.data)) : v)));
}

const small = (r: LogRecord) => encodeRecord(r).byteLength <= 200;

describe("record encoding and framing", () => {
  it("round trips every record type through encodeRecord, frame, parseFrame and decodeRecord", () => {
    fc.assert(
      fc.property(recordArb, (rec) => {
        const framed = frame(encodeRecord(rec));
        const parsed = parseFrame(framed, 0, BODY_MAX);
        expect(parsed.kind).toBe("ok");
        if (parsed.kind !== "ok") return;
        expect(parsed.next).toBe(framed.byteLength);
        expect(comparable(decodeRecord(parsed.body))).toEqual(comparable(rec));
      }),
      { numRuns: 500 },
    );
  });

  it("covers all six record types in the arbitrary", () => {
    const seen = new Set(fc.sample(recordArb, 300).map((r) => r.t));
    expect([...seen].sort()).toEqual(["chunk", "kdel", "kset", "sdel", "sdelall", "sset"]);
  });

  it("keeps an append's framing small: no placeholders, no stored size, the revision as a delta", () => {
    const loc = "bench/append/f256";
    const value = new Uint8Array(1024); // a plain Uint8Array must not cost a typed-array tag
    const rec: LogRecord = { t: "sset", loc, seq: 100_000, rev: 100_000, ts: 1_763_900_000_000, value, size: 1024 };
    const framed = frame(encodeRecord(rec));
    // frame header 8 + array 1 + tag 1 + loc 1+17 + seq 5 + rev delta 1 + ts 9 + byte-string header 3
    expect(framed.byteLength - value.byteLength).toBe(46);
    expect(comparable(decodeRecord(framed.subarray(FRAME_HEADER_BYTES)))).toEqual(comparable(rec));
  });

  it("writeFrame writes at an offset and parseFrame finds it there", () => {
    const body = encodeRecord({ t: "sdel", loc: "a/b", seq: 7, rev: 9, ts: 1 });
    const out = Buffer.alloc(5 + FRAME_HEADER_BYTES + body.byteLength + 3, 0xee);
    const end = writeFrame(out, 5, body);
    expect(end).toBe(5 + FRAME_HEADER_BYTES + body.byteLength);
    expect(out.subarray(0, 5).every((b) => b === 0xee)).toBe(true);
    expect(out.subarray(end).every((b) => b === 0xee)).toBe(true);
    const parsed = parseFrame(out, 5, BODY_MAX);
    expect(parsed).toMatchObject({ kind: "ok", next: end });
    if (parsed.kind === "ok") expect(Buffer.compare(parsed.body, Buffer.from(body))).toBe(0);
    expect(out.readUInt32BE(5 + 4)).toBe(body.byteLength); // after the CRC
  });

  it("parses a frame truncated at every offset as incomplete, never ok", () => {
    fc.assert(
      fc.property(recordArb, (rec) => {
        const framed = frame(encodeRecord(rec));
        for (let cut = 0; cut < framed.byteLength; cut++) {
          const parsed = parseFrame(framed.subarray(0, cut), 0, BODY_MAX);
          expect(parsed.kind, `cut at ${cut} of ${framed.byteLength}`).toBe("incomplete");
          if (parsed.kind === "incomplete") expect(parsed.needBytes).toBe(cut < FRAME_HEADER_BYTES ? FRAME_HEADER_BYTES : framed.byteLength);
        }
      }),
      { numRuns: 100 },
    );
  });

  it("detects every single flipped bit of a small frame, alone or followed by more frames", () => {
    const next = frame(encodeRecord({ t: "chunk", data: new Uint8Array(64).fill(7) }));
    fc.assert(
      fc.property(recordArb.filter(small), (rec) => {
        const framed = frame(encodeRecord(rec));
        for (let bit = 0; bit < framed.byteLength * 8; bit++) {
          const damaged = Buffer.from(framed);
          damaged[bit >> 3]! ^= 1 << (bit & 7);
          for (const buf of [damaged, Buffer.concat([damaged, next])]) {
            const parsed = parseFrame(buf, 0, BODY_MAX);
            expect(parsed.kind, `bit ${bit} of ${framed.byteLength * 8}`).not.toBe("ok");
          }
        }
      }),
      { numRuns: 40 },
    );
  });

  it("yields exactly the complete frames when a buffer grows one byte at a time", () => {
    fc.assert(
      fc.property(fc.array(recordArb.filter(small), { minLength: 1, maxLength: 6 }), (recs) => {
        const frames = recs.map((r) => frame(encodeRecord(r)));
        const all = Buffer.concat(frames);
        const ends: number[] = [];
        frames.reduce((at, f) => (ends.push(at + f.byteLength), at + f.byteLength), 0);
        // An incremental reader: keeps its offset, retries at each new byte.
        let off = 0;
        const got: Buffer[] = [];
        for (let have = 0; have <= all.byteLength; have++) {
          const view = all.subarray(0, have);
          for (;;) {
            const parsed = parseFrame(view, off, BODY_MAX);
            expect(parsed.kind).not.toBe("corrupt");
            if (parsed.kind !== "ok") break;
            got.push(Buffer.from(parsed.body));
            off = parsed.next;
          }
          expect(got.length).toBe(ends.filter((e) => e <= have).length);
        }
        expect(off).toBe(all.byteLength);
        expect(got.map((b) => comparable(decodeRecord(b)))).toEqual(recs.map(comparable));
      }),
      { numRuns: 60 },
    );
  });

  it("refuses length 0 and absurd lengths as corrupt before waiting for the bytes", () => {
    const header = (length: number) => {
      const b = Buffer.alloc(FRAME_HEADER_BYTES);
      b.writeUInt32BE(length, 4); // after the CRC
      return b;
    };
    expect(parseFrame(header(0), 0, BODY_MAX).kind).toBe("corrupt");
    expect(parseFrame(Buffer.concat([header(0), Buffer.alloc(32)]), 0, BODY_MAX).kind).toBe("corrupt");
    expect(parseFrame(header(0xffffffff), 0, BODY_MAX).kind).toBe("corrupt");
    expect(parseFrame(header(BODY_MAX + 1), 0, BODY_MAX).kind).toBe("corrupt");
    // At the limit itself the length is plausible: the reader waits for the body.
    expect(parseFrame(header(BODY_MAX), 0, BODY_MAX)).toEqual({ kind: "incomplete", needBytes: FRAME_HEADER_BYTES + BODY_MAX });
    // A real frame whose body exceeds the caller's limit is refused too.
    const big = frame(encodeRecord({ t: "chunk", data: new Uint8Array(2000) }));
    expect(parseFrame(big, 0, 1000).kind).toBe("corrupt");
    expect(parseFrame(big, 0, 4000).kind).toBe("ok");
  });

  it("parses frames at an offset and reports incomplete at the very end of the buffer", () => {
    const a = frame(encodeRecord({ t: "chunk", data: new Uint8Array([1]) }));
    const b = frame(encodeRecord({ t: "sdel", loc: "x", seq: 1, rev: 2, ts: 3 }));
    const buf = Buffer.concat([a, b]);
    const first = parseFrame(buf, 0, BODY_MAX);
    expect(first).toMatchObject({ kind: "ok", next: a.byteLength });
    const second = parseFrame(buf, a.byteLength, BODY_MAX);
    expect(second).toMatchObject({ kind: "ok", next: buf.byteLength });
    expect(parseFrame(buf, buf.byteLength, BODY_MAX)).toEqual({ kind: "incomplete", needBytes: FRAME_HEADER_BYTES });
  });
});

function expectCorruptOrRecord(body: Uint8Array): void {
  let rec: LogRecord;
  try {
    rec = decodeRecord(body);
  } catch (err) {
    expect(err).toBeInstanceOf(StrataError);
    expect((err as StrataError).code).toBe("CORRUPT");
    return;
  }
  checkShape(rec);
}

/** What a decoded record promises to its users, whatever bytes it came from. */
function checkShape(rec: LogRecord): void {
  const isNat = (v: unknown) => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
  if (rec.t === "chunk") {
    expect(rec.data).toBeInstanceOf(Uint8Array);
    return;
  }
  expect(typeof rec.loc).toBe("string");
  if (rec.t === "import") {
    expect(typeof rec.from === "string" && isNat(rec.cut) && isNat(rec.epoch)).toBe(true);
    return;
  }
  if (rec.t === "config") {
    expect((rec.kind === "stream" || rec.kind === "kv") && isNat(rec.ts) && typeof rec.limits === "object").toBe(true);
    return;
  }
  expect(isNat(rec.rev) && isNat(rec.ts)).toBe(true);
  if (rec.t === "sset" || rec.t === "kset") {
    expect(rec.value).toBeInstanceOf(Uint8Array);
    expect(isNat(rec.size)).toBe(true);
    if (rec.headers !== undefined) {
      expect(Object.getPrototypeOf(rec.headers) === Object.prototype || Object.getPrototypeOf(rec.headers) === null).toBe(true);
      for (const v of Object.values(rec.headers)) expect(typeof v).toBe("string");
    }
    for (const p of rec.chunks ?? []) expect(isNat(p.seg) && isNat(p.off) && isNat(p.len)).toBe(true);
  }
}

describe("decodeRecord on untrusted bytes", () => {
  it("throws only CORRUPT StrataErrors on random bytes", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 200 }), (b) => expectCorruptOrRecord(b)), { numRuns: 2000 });
  });

  it("throws only CORRUPT StrataErrors on valid encodings with bytes changed or cut", () => {
    const damaged = fc.tuple(recordArb, fc.nat(), fc.integer({ min: 1, max: 255 }), fc.boolean()).map(([rec, at, xor, cut]) => {
      const b = Buffer.from(encodeRecord(rec));
      if (cut) return b.subarray(0, at % b.byteLength);
      b[at % b.byteLength]! ^= xor;
      return b;
    });
    fc.assert(fc.property(damaged, (b) => expectCorruptOrRecord(b)), { numRuns: 2000 });
  });

  it("throws only CORRUPT StrataErrors on well-formed CBOR of the wrong shape", () => {
    const any = (maxDepth: number) => fc.anything({ maxDepth, withMap: true, withSet: true, withDate: true, withTypedArray: true, withBigInt: true });
    const tagged = fc.tuple(fc.integer({ min: 0, max: 8 }), fc.array(any(2), { maxLength: 11 })).map(([tag, rest]) => [tag, ...rest]);
    fc.assert(fc.property(fc.oneof(any(3), tagged), (v) => expectCorruptOrRecord(encode(v))), { numRuns: 2000 });
  });

  it("refuses a record type that is not a number with CORRUPT, even one whose conversion to a key throws", () => {
    // fast-check found [{ toString: 0 }, {}]: looking the type up as a property key threw a TypeError.
    for (const tag of [{ toString: 0 }, { valueOf: 1, toString: {} }, "1", [1], 1.5, -1, 99, null]) {
      const err = (() => {
        try {
          decodeRecord(encode([tag, "loc", 1, 0, 1, Buffer.from("ab")]));
        } catch (e) {
          return e;
        }
        return undefined;
      })();
      expect(err, JSON.stringify(tag)).toBeInstanceOf(StrataError);
      expect((err as StrataError).code).toBe("CORRUPT");
    }
  });

  it("refuses fields of the wrong type with CORRUPT", () => {
    const v = Buffer.from("ab");
    const cases: unknown[] = [
      [1, "loc", -1, 0, 1, v], // negative seq
      [1, "loc", 1.5, 0, 1, v], // fractional seq
      [1, "loc", 1, -2, 1, v], // revision below zero (seq + delta)
      [1, "loc", 1, 0.5, 1, v], // fractional revision delta
      [1, 7, 1, 0, 1, v], // loc not a string
      [1, "loc", 1, 0, 1, "not bytes"], // value not bytes
      [1, "loc", 1, 0, 1], // inline value missing
      [1, "loc", 1, 0, 1, v, { a: 1 }], // header value not a string
      [1, "loc", 1, 0, 1, v, ["a"]], // headers an array
      [1, "loc", 1, 0, 1, v, new Map([[1, "a"]])], // headers a map with a number name
      [1, "loc", 1, 0, 1, v, new Date(5)], // headers a tagged date
      [1, "loc", 1, 0, 1, null, null, null, [[1, 2]], 0], // pointer not a triple
      [1, "loc", 1, 0, 1, null, null, null, [], 0], // empty chunk list
      [1, "loc", 1, 0, 1, null, null, null, [[1, 2, 3]]], // size missing for a chunked value
      [1, "loc", 1, 0, 1, v, null, null, [[1, 2, 3]], 2], // chunked value with inline bytes
      [1, "loc", 1, 0, 1, v, null, null, null, 2], // size stored for an inline value
      [1, "loc", 1, 0, 1, v, null, "m", null, null, -5], // commit time below zero (ts + delta)
      [1, "loc", 1, 0, 1, v, null], // trailing absent field written
      [1, "loc", 1, 0, 1, v, null, null, null, null, 0, 7], // too many fields
      [2, "loc", 1, 0, 1, 9], // too many fields for a delete
      [2, "loc", 1, 0], // too few fields
      [4, "loc", "k", 1, 1, v, null, "soon"], // expiresAt not a number
      [5, "loc", "k", 1, 1, 2], // expired flag not 1
      [6, null], // chunk without data
      [99, "loc"], // unknown type
      [1], // too short
      { t: "sset" }, // not an array
    ];
    for (const c of cases) {
      const err = (() => {
        try {
          decodeRecord(encode(c));
        } catch (e) {
          return e;
        }
        return undefined;
      })();
      expect(StrataError.is(err, "CORRUPT"), JSON.stringify(c)).toBe(true);
    }
  });
});

describe("FrameChunks (a batch's frames in shared chunks)", () => {
  it("makes exactly the frames `frame` makes, each its own view, none overwritten by a later one", () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ minLength: 1, maxLength: 9000 }), { minLength: 1, maxLength: 60 }), (bodies) => {
        const chunks = new FrameChunks();
        for (const b of bodies) chunks.add(b);
        expect(chunks.frames.length).toBe(bodies.length);
        chunks.frames.forEach((f, i) => {
          expect(Buffer.compare(f, frame(bodies[i]!))).toBe(0);
          const parsed = parseFrame(f, 0, BODY_MAX);
          expect(parsed.kind).toBe("ok");
        });
        // Views into the same chunk never overlap: writing one frame leaves the others as they were.
        const copies = chunks.frames.map((f) => Buffer.from(f));
        chunks.frames[0]!.fill(0xee);
        chunks.frames.slice(1).forEach((f, i) => expect(Buffer.compare(f, copies[i + 1]!)).toBe(0));
      }),
      { numRuns: 200 },
    );
  });
});

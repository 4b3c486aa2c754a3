/**
 * The direct batch encoder (src/net/wire/batch-encode.ts) against cbor-x: for any batch, the
 * bytes decode to exactly what `encode({ ...head, items })` decodes to, and for the items a
 * getAll sends (integers, bytes, strings) they are the same bytes.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { encodeBatch } from "../../src/net/wire/batch-encode.js";
import { decodeUntrusted, encode } from "../../src/net/wire/wire-codec.js";

const bytes = fc.uint8Array({ maxLength: 300 }).map((b) => (b.length % 2 === 0 ? Buffer.from(b) : b));
/** Integers around every header-size boundary and the 2^32 float switch. */
const uint = fc.oneof(
  fc.nat(30),
  fc.constantFrom(23, 24, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 1_764_550_000_000, Number.MAX_SAFE_INTEGER),
  fc.maxSafeNat(),
);
const text = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: "grapheme", maxLength: 40 }), fc.string({ minLength: 250, maxLength: 300 }));
const other = fc.oneof(
  fc.integer({ min: -(2 ** 40), max: -1 }),
  fc.double({ noNaN: true }),
  fc.constant(undefined),
  fc.constant(null),
  fc.boolean(),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.string({ maxLength: 8 }), { maxKeys: 4 }),
  fc.array(fc.nat(), { maxLength: 4 }),
);
const key = fc.oneof(fc.constantFrom("seq", "value", "timestamp", "rev", "headers", "key", "revision", "expiresAt"), fc.string({ maxLength: 30 }));
const item = fc.oneof(
  { weight: 4, arbitrary: fc.dictionary(key, fc.oneof(uint, bytes, text, other), { maxKeys: 30 }) },
  { weight: 1, arbitrary: fc.oneof(text, uint, other, fc.array(uint, { maxLength: 3 })) },
);
const head = fc.record({ s: fc.string({ maxLength: 20 }), w: fc.nat(1000) }, { requiredKeys: ["s", "w"] }).chain((h) =>
  fc.option(fc.nat(), { nil: undefined }).map((base) => (base === undefined ? h : { ...h, base })),
);

describe("encodeBatch", () => {
  it("decodes to what cbor-x's encoding of the same frame decodes to", () => {
    fc.assert(
      fc.property(head, fc.array(item, { maxLength: 40 }), (h, items) => {
        const direct = decodeUntrusted(encodeBatch(h, items), "batch");
        const reference = decodeUntrusted(encode({ ...h, items }), "batch");
        expect(direct).toStrictEqual(reference);
        expect(Object.keys(direct as object)).toEqual(Object.keys(reference as object));
      }),
      { numRuns: 400 },
    );
  });

  it("writes the same bytes as cbor-x for getAll's items", () => {
    const message = fc.record({ seq: uint, value: fc.uint8Array({ maxLength: 70_000 }).map((b) => Buffer.from(b)), timestamp: uint, rev: uint });
    fc.assert(
      fc.property(fc.array(message, { maxLength: 30 }), (items) => {
        expect(Buffer.from(encodeBatch({ s: "x", w: 8 }, items)).equals(Buffer.from(encode({ s: "x", w: 8, items })))).toBe(true);
      }),
      { numRuns: 100 },
    );
  });

  it("keeps the items last, and refuses a head that already has items", () => {
    expect(() => encodeBatch({ items: [1], s: "x" }, [2])).toThrow(/last field/);
  });
});

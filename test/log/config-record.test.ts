/**
 * The `config` log record (type tag 8: `[8, loc, kind, ts, limits]`), byte by byte as
 * framing.test.ts tests the others: it round trips for every valid configuration; cut at any
 * offset or with any single byte changed it decodes to CORRUPT or to a well-formed config (never
 * anything else, never a throw of another kind); fields of the wrong type or kind are CORRUPT.
 */
import { encode } from "cbor-x";
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { frame, parseFrame } from "../../src/log/framing.js";
import { decodeRecord, encodeRecord, type ConfigRecord, type LogRecord } from "../../src/log/record.js";
import { checkLocationLimits } from "../../src/validate.js";
import type { LocationLimits } from "../../src/types.js";

const loc = fc.stringMatching(/^[-_=a-zA-Z0-9]{1,12}(\/[-_=a-zA-Z0-9]{1,12}){0,3}$/);
const pos = fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER });
const opt = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: undefined });

const streamLimits: fc.Arbitrary<LocationLimits> = fc
  .record({ maxMsgs: opt(pos), maxBytes: opt(pos), maxAgeMs: opt(pos), discard: opt(fc.constantFrom("old" as const, "new" as const)), dedupWindowMs: opt(fc.maxSafeNat()), denyDelete: opt(fc.constant(true)) })
  .map(strip);
const kvLimits: fc.Arbitrary<LocationLimits> = fc
  .record({ maxMsgs: opt(pos), maxBytes: opt(pos), discard: opt(fc.constant("new" as const)), denyDelete: opt(fc.constant(true)), ttlMs: opt(pos) })
  .map(strip);

const configArb: fc.Arbitrary<ConfigRecord> = fc.oneof(
  fc.record({ loc, ts: fc.maxSafeNat(), limits: streamLimits }).map((r) => ({ t: "config" as const, kind: "stream" as const, ...r })),
  fc.record({ loc, ts: fc.maxSafeNat(), limits: kvLimits }).map((r) => ({ t: "config" as const, kind: "kv" as const, ...r })),
);

function strip<T extends object>(r: T): T {
  return Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined)) as T;
}

/** CORRUPT, or a config whose limits pass the same check the edge applies (without caps). */
function corruptOrWellFormed(b: Uint8Array): void {
  let rec: LogRecord;
  try {
    rec = decodeRecord(b);
  } catch (e) {
    expect(StrataError.is(e, "CORRUPT"), String(e)).toBe(true);
    return;
  }
  if (rec.t !== "config") return; // a damaged config that reads as another valid record: framing's checksum catches that
  expect(rec.loc.length).toBeGreaterThan(0);
  expect(rec.kind === "stream" || rec.kind === "kv").toBe(true);
  expect(Number.isSafeInteger(rec.ts) && rec.ts >= 0).toBe(true);
  expect(checkLocationLimits(rec.limits, rec.kind)).toEqual({ limits: rec.limits });
}

describe("config record", () => {
  it("round trips through encodeRecord, frame, parseFrame and decodeRecord", () => {
    fc.assert(
      fc.property(configArb, (rec) => {
        const f = frame(encodeRecord(rec));
        const parsed = parseFrame(f, 0, 1 << 20);
        expect(parsed.kind).toBe("ok");
        if (parsed.kind !== "ok") return;
        expect(decodeRecord(parsed.body)).toEqual(rec);
      }),
      { numRuns: 500 },
    );
  });

  it("is small: a typical config is a few dozen bytes", () => {
    const b = encodeRecord({ t: "config", loc: "acct/alice/chat", kind: "stream", ts: 1_700_000_000_000, limits: { maxMsgs: 1000, maxAgeMs: 86_400_000 } });
    expect(b.byteLength).toBeLessThan(64);
  });

  it("cut at every offset or with every byte changed: CORRUPT or a well-formed config", () => {
    const rec: ConfigRecord = { t: "config", loc: "a/b", kind: "stream", ts: 1_700_000_000_000, limits: { maxMsgs: 10, maxBytes: 300, discard: "new", denyDelete: true, dedupWindowMs: 0 } };
    const b = Buffer.from(encodeRecord(rec));
    for (let at = 0; at < b.byteLength; at++) {
      expect(() => decodeRecord(b.subarray(0, at))).toThrow(StrataError);
      for (let bit = 0; bit < 8; bit++) {
        const c = Buffer.from(b);
        c[at]! ^= 1 << bit;
        corruptOrWellFormed(c);
      }
    }
  });

  it("throws only CORRUPT on random damage of random configs", () => {
    const damaged = fc.tuple(configArb, fc.nat(), fc.integer({ min: 1, max: 255 }), fc.boolean()).map(([rec, at, xor, cut]) => {
      const b = Buffer.from(encodeRecord(rec));
      if (cut) return b.subarray(0, at % b.byteLength);
      b[at % b.byteLength]! ^= xor;
      return b;
    });
    fc.assert(fc.property(damaged, corruptOrWellFormed), { numRuns: 2000 });
  });

  it("refuses fields of the wrong type or kind with CORRUPT", () => {
    const cases: unknown[] = [
      [8, "", "stream", 1, {}], // no location
      [8, 7, "stream", 1, {}], // loc not a string
      [8, "l", "queue", 1, {}], // unknown kind
      [8, "l", "stream", -1, {}], // negative ts
      [8, "l", "stream", 1], // limits missing
      [8, "l", "stream", 1, {}, 9], // too many fields
      [8, "l", "stream", 1, [1]], // limits an array
      [8, "l", "stream", 1, null], // limits absent
      [8, "l", "stream", 1, { maxMsgs: -1 }], // negative
      [8, "l", "stream", 1, { maxMsgs: 1.5 }], // fraction
      [8, "l", "stream", 1, { maxMsgs: "3" }], // string
      [8, "l", "stream", 1, { nope: 1 }], // unknown field
      [8, "l", "stream", 1, { ttlMs: 5 }], // a kv field on a stream
      [8, "l", "kv", 1, { maxAgeMs: 5 }], // a stream field on a kv
      [8, "l", "kv", 1, { discard: "old" }], // discard old on a kv
      [8, "l", "stream", 1, { denyDelete: 1 }], // not a boolean
      [8, "l", "stream", 1, { maxBytes: 1, maxMsgBytes: 2 }], // contradictory
      [8, "l", "stream", 1, new Map<unknown, unknown>([[1, 2]])], // a map with a number key
      [8, "l", "stream", 1, new Date(1)], // a tagged value
    ];
    for (const c of cases) {
      let err: unknown;
      try {
        decodeRecord(encode(c));
      } catch (e) {
        err = e;
      }
      expect(StrataError.is(err, "CORRUPT"), JSON.stringify(c)).toBe(true);
    }
  });
});

/**
 * Wire fuzzing in the suite (issue #8, "Make it systematic"): random and boundary-valued bodies on
 * every subject class a server and the coordinator listen on, against a real nats-server, an
 * in-process server and a coordinator. Every request must get either a well-formed reply (a CBOR
 * map) or an error reply whose code is a known one other than INTERNAL; a refused request writes
 * nothing; afterwards both still serve a normal client. Besides the random bodies, every field of
 * every op (and of the coordinator's bodies) is sent every boundary value once, deterministically.
 *
 * Seeded: the seed is printed, and `STRATA_FUZZ_SEED=<seed> npx vitest run test/net/wire-fuzz.test.ts`
 * replays a failure exactly (fast-check also prints the counterexample and its path).
 * `STRATA_FUZZ_RUNS` raises the count for a longer run by hand.
 */
import { join } from "node:path";
import { Encoder, decode } from "cbor-x";
import fc from "fast-check";
import type { NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ERROR_CODES } from "../../src/errors.js";
import { StrataClient } from "../../src/net/client/client.js";
import { startCoordinator, type Coordinator } from "../../src/net/coord/coordinator.js";
import type { StrataServer } from "../../src/net/server/server.js";
import { ERROR_HEADER } from "../../src/net/wire/wire-errors.js";
import type { Store } from "../../src/store.js";
import { startStack, type Stack } from "../helpers/strata-stack.js";

const SEED = Number(process.env.STRATA_FUZZ_SEED ?? 20_240_808);
const RUNS = Number(process.env.STRATA_FUZZ_RUNS ?? 600);
const P = "fz";
const ID = "fz1";
const LOCS = ["acct/a/x", "acct/a/y", "acct/b/kv"];

/** Encodes JS Maps as CBOR maps with any keys, including `__proto__`, `toString`, `constructor`. */
const cbor = new Encoder({ useRecords: false, mapsAsObjects: false, tagUint8Array: false });
const KNOWN = new Set<string>(ERROR_CODES.filter((c) => c !== "INTERNAL"));

let stack: Stack;
let nc: NatsConnection;
let store: Store;
let server: StrataServer;
let coordinator: Coordinator;

beforeAll(async () => {
  stack = await startStack({
    id: ID,
    shareConnection: true,
    server: {
      // Under the coordinator below: every request also passes admission (claims, leases).
      standalone: false,
      prefix: P,
      // Fuzzed uploads and streamed reads are left open on purpose: let them lapse quickly.
      limits: { uploadIdleMs: 300, uploadBytesPerSecMin: 1024, replyIdleMs: 300, shutdownGraceMs: 500 },
    },
  });
  ({ nc, store, server } = stack);
  coordinator = await startCoordinator({ nc, prefix: P, dataDir: join(stack.dir, "coord") });
});

afterAll(async () => {
  await coordinator?.stop();
  await stack?.stop();
});

const KEYS = ["toString", "valueOf", "constructor", "__proto__", "hasOwnProperty", "then", "length", "0"];

/** Every field of the coordinator's request bodies (docs/failover.md). */
const COORD_FIELDS = ["id", "incarnation", "startedAt", "load", "locations", "location", "epochs", "epoch", "from", "cut", "to", "server"] as const;
/** The coordinator's subjects, with a well-formed body each, whose fields the edge test varies one at a time. */
const COORD_BODIES: Array<[string, Record<string, unknown>]> = [
  ["register", { id: "hb-edge", startedAt: 1, load: {} }],
  ["renew", { id: "hb-edge", incarnation: 1, load: {} }],
  ["claim", { id: "hb-edge", incarnation: 1, locations: ["acct/a/x"] }],
  ["cut", { id: "hb-edge", incarnation: 1, location: "acct/a/x", epoch: 1, from: "zz", cut: 1 }],
  ["confirm", { id: "hb-edge", incarnation: 1, epochs: [["acct/a/x", 1]] }],
  ["release", { id: "hb-edge", incarnation: 1, locations: ["acct/a/x"] }],
  ["move", { location: "acct/a/nowhere", to: "nobody" }],
  ["drain", { server: "nobody" }],
];

/** Values at the edges of every type a field may hold. */
const nasty: fc.Arbitrary<unknown> = fc.letrec((tie) => ({
  value: fc.oneof(
    { weight: 4, arbitrary: fc.constantFrom(0, -1, 1, 2 ** 53 - 1, 2 ** 53, 2 ** 64, -(2 ** 53), NaN, Infinity, -Infinity, -0, 1.5, 1e308) },
    { weight: 1, arbitrary: fc.constantFrom(2n ** 64n, -(2n ** 70n), 1n) },
    { weight: 2, arbitrary: fc.constantFrom(null, true, false, undefined) },
    { weight: 3, arbitrary: fc.oneof(fc.string({ maxLength: 12 }), fc.constantFrom("", "acct/a/x", "a".repeat(5000), "__proto__", "1", "-1", "NaN", "stream.append")) },
    { weight: 2, arbitrary: fc.uint8Array({ maxLength: 32 }) },
    { weight: 2, arbitrary: fc.array(tie("value"), { maxLength: 4 }) },
    { weight: 2, arbitrary: fc.array(fc.tuple(fc.oneof(fc.constantFrom(...KEYS), fc.string({ maxLength: 6 })), tie("value")), { maxLength: 4 }).map((e) => new Map(e)) },
    // A map that owns the methods code might call on it (String(v), `${v}`, v + "").
    { weight: 2, arbitrary: fc.constantFrom(...KEYS).map((k) => new Map<unknown, unknown>([[k, 1]])) },
  ),
})).value;

const OPS = [
  "stream.append", "stream.appendMany", "stream.set", "stream.setMany", "stream.delete", "stream.deleteAll",
  "kv.set", "kv.setMany", "kv.delete", "stream.config", "kv.config", "upload", "chunk", "credit", "batch",
  "stream.get", "kv.get", "inventory", "changes", "stream.getAll", "kv.getAll", "kv.keys",
];
const FIELDS = ["message", "options", "items", "seq", "key", "value", "limits", "head", "bytes", "upload", "k", "data", "stream", "n", "cancel", "after", "limit", "startSeq", "location", "op"];

/** A request map: a real or junk op and fields from every op, with boundary values. */
const request: fc.Arbitrary<Map<unknown, unknown>> = fc
  .tuple(
    fc.oneof({ weight: 5, arbitrary: fc.constantFrom(...OPS) }, { weight: 1, arbitrary: nasty }),
    fc.array(fc.tuple(fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...FIELDS) }, { weight: 1, arbitrary: fc.constantFrom(...KEYS) }), nasty), { maxLength: 4 }),
  )
  .map(([op, fields]) => new Map<unknown, unknown>([["op", op], ...fields]));

/** Bodies: structured requests, batches of them, truncated CBOR, random bytes, absurd chunk headers. */
const body: fc.Arbitrary<Uint8Array> = fc.oneof(
  { weight: 6, arbitrary: request.map((m) => cbor.encode(m)) },
  { weight: 2, arbitrary: fc.array(request.map((m) => cbor.encode(m)), { minLength: 1, maxLength: 4 }).map((items) => cbor.encode(new Map<unknown, unknown>([["op", "batch"], ["items", items]]))) },
  { weight: 2, arbitrary: fc.tuple(request, fc.nat()).map(([m, cut]) => { const b = cbor.encode(m); return b.subarray(0, cut % Math.max(1, b.byteLength)); }) },
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 64 }) },
  {
    weight: 2,
    arbitrary: fc
      .tuple(fc.constantFrom(0, -1, 1, 2 ** 53 - 1, 2 ** 53, 2 ** 32, NaN, Infinity), fc.constantFrom(0, -1, 1, 2 ** 30, 2 ** 53 - 1, 2 ** 53, 2 ** 40, NaN))
      .map(([head, bytes]) => cbor.encode(new Map<unknown, unknown>([["op", "upload"], ["head", head], ["bytes", bytes]]))),
  },
  { weight: 1, arbitrary: fc.tuple(fc.string({ maxLength: 30 }), fc.constantFrom(0, -1, 2 ** 53, NaN), fc.uint8Array({ maxLength: 8 })).map(([upload, k, data]) => cbor.encode(new Map<unknown, unknown>([["op", "chunk"], ["upload", upload], ["k", k], ["data", data]]))) },
  // The coordinator's bodies.
  { weight: 1, arbitrary: nasty.map((location) => cbor.encode(new Map([["location", location]]))) },
  { weight: 1, arbitrary: fc.tuple(nasty, nasty, nasty).map(([id, startedAt, load]) => cbor.encode(new Map([["id", id], ["startedAt", startedAt], ["load", load]]))) },
  {
    weight: 2,
    arbitrary: fc
      .dictionary(fc.constantFrom(...COORD_FIELDS), nasty, { maxKeys: 6 })
      .map((fields) => cbor.encode(new Map<unknown, unknown>(Object.entries(fields)))),
  },
);

const locationTokens = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...LOCS.map((l) => l.replaceAll("/", "."))) },
  { weight: 1, arbitrary: fc.array(fc.stringMatching(/^[-_=a-zA-Z0-9$%~]{1,6}$/), { minLength: 1, maxLength: 20 }).map((t) => t.join(".")) },
);

/** Every subject class the server and the coordinator listen on. */
const subject = fc.oneof(
  { weight: 4, arbitrary: locationTokens.map((t) => `${P}.w.${ID}.${t}`) },
  { weight: 4, arbitrary: locationTokens.map((t) => `${P}.r.${ID}.${t}`) },
  { weight: 1, arbitrary: fc.constant(`${P}.coord.locate`) },
  { weight: 1, arbitrary: fc.constant(`${P}.coord.servers`) },
  { weight: 2, arbitrary: fc.constantFrom(...COORD_BODIES.map(([name]) => `${P}.coord.${name}`)) },
);

const revisions = () => LOCS.map((l) => store.inventory(l).revision);

/** Sends one request; returns a description of what was wrong with the answer, or undefined. */
async function probe(subj: string, data: Uint8Array): Promise<string | undefined> {
  const before = revisions();
  let reply;
  try {
    reply = await nc.request(subj, data, { timeout: 3000 });
  } catch (err) {
    // A credit for an unknown stream is answered; a valid one is not, and fuzzing never has one.
    return `no reply: ${(err as Error).message}`;
  }
  const code = reply.headers?.get(ERROR_HEADER) ?? "";
  if (code !== "") {
    if (!KNOWN.has(code)) return `error code ${code}: ${reply.headers?.get("Strata-Message")}`;
    const after = revisions();
    if (after.some((r, i) => r !== before[i])) return `refused with ${code} but wrote: revisions ${before} → ${after}`;
    return undefined;
  }
  try {
    const value = decode(reply.data) as unknown;
    if (value === null || typeof value !== "object" || Array.isArray(value)) return "the reply is not a CBOR map";
  } catch (err) {
    return `the reply is not CBOR: ${(err as Error).message}`;
  }
  return undefined;
}

describe("wire fuzzing", () => {
  it(`every request on every subject gets a well-formed reply or a known error (seed ${SEED}, ${RUNS} runs)`, async () => {
    // Printed so a failing run can be replayed: STRATA_FUZZ_SEED=<seed>.
    console.log(`wire-fuzz seed ${SEED} (replay: STRATA_FUZZ_SEED=${SEED} npx vitest run test/net/wire-fuzz.test.ts)`);
    await fc.assert(
      fc.asyncProperty(subject, body, async (subj, data) => {
        const problem = await probe(subj, data);
        if (problem !== undefined) throw new Error(`${subj} ${Buffer.from(data).toString("hex").slice(0, 400)}: ${problem}`);
      }),
      { seed: SEED, numRuns: RUNS, endOnFailure: true },
    );
    // Uploads and streamed replies the fuzzer opened lapse (uploadIdleMs, replyIdleMs): none is stuck.
    const deadline = Date.now() + 5000;
    while (server.stats().inFlight > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(server.stats()).toMatchObject({ inFlight: 0, uploadsOpen: 0 });
  }, 120_000);

  it("every field of every op, and of the coordinator's bodies, with every boundary value", async () => {
    const edges: unknown[] = [
      0, -1, 2 ** 53 - 1, 2 ** 53, NaN, Infinity, -0, 1.5, 2n ** 64n, -(2n ** 70n), null, true, "", "a".repeat(5000),
      new Uint8Array(0), [], [new Map([["toString", 1]])],
      ...KEYS.map((k) => new Map<unknown, unknown>([[k, 1]])),
    ];
    // One op per field that has it, so each value reaches the field's own validation.
    const opOf: Record<string, string[]> = {
      message: ["stream.append", "stream.set"], options: ["stream.append", "kv.set", "stream.deleteAll"], items: ["stream.appendMany", "kv.setMany", "batch"],
      seq: ["stream.set", "stream.get", "stream.delete"], key: ["kv.set", "kv.get", "kv.getAll"], value: ["kv.set"], head: ["upload"], bytes: ["upload"],
      upload: ["chunk"], k: ["chunk"], data: ["chunk"], stream: ["credit"], n: ["credit"], cancel: ["credit"], after: ["changes"], limit: ["changes"],
      startSeq: ["stream.getAll"], location: ["stream.append", "inventory"], limits: ["stream.config", "kv.config"],
    };
    const cases: Array<[string, Uint8Array]> = [];
    for (const [field, ops] of Object.entries(opOf)) {
      for (const op of ops) {
        const cls = ["stream.get", "kv.get", "kv.getAll", "changes", "stream.getAll", "inventory"].includes(op) ? "r" : "w";
        for (const v of edges) cases.push([`${P}.${cls}.${ID}.acct.a.x`, cbor.encode(new Map<unknown, unknown>([["op", op], [field, v]]))]);
      }
    }
    for (const v of edges) {
      cases.push([`${P}.w.${ID}.acct.a.x`, cbor.encode(new Map<unknown, unknown>([["op", v]]))]);
      cases.push([`${P}.coord.locate`, cbor.encode(new Map([["location", v]]))]);
      for (const [name, valid] of COORD_BODIES) {
        for (const field of Object.keys(valid)) {
          const body = new Map<unknown, unknown>(Object.entries(valid));
          body.set(field, v);
          cases.push([`${P}.coord.${name}`, cbor.encode(body)]);
        }
      }
    }
    const problems: string[] = [];
    for (const [subj, data] of cases) {
      const problem = await probe(subj, data);
      if (problem !== undefined) problems.push(`${subj} ${Buffer.from(data).toString("hex").slice(0, 200)}: ${problem}`);
    }
    expect(problems).toEqual([]);
  }, 60_000);

  it("left the server and the coordinator serving a normal client", async () => {
    const client = new StrataClient(nc, { prefix: P });
    const { seq } = await client.stream("acct/a/after").append({ value: new Uint8Array([42]) });
    expect([...(await client.stream("acct/a/after").get(seq))!.value]).toEqual([42]);
    client.close();
    // The coordinator still answers, and the server still holds its lease.
    let ids: string[] = [];
    for (const deadline = Date.now() + 5000; !ids.includes(ID) && Date.now() < deadline; await new Promise((resolve) => setTimeout(resolve, 50))) {
      const reply = await nc.request(`${P}.coord.servers`, new Uint8Array(0), { timeout: 3000 });
      ids = (decode(reply.data) as { servers: Array<{ id: string }> }).servers.map((s) => s.id);
    }
    expect(ids).toContain(ID);
  });
});

/**
 * Issue #8 item 1 over the wire: seqs and revisions past `seqMax` get INVALID_ARGUMENT on every
 * subject (never INTERNAL, never a wedged server), and the bound itself works end to end.
 */
import { Encoder } from "cbor-x";
import type { NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { seqMax } from "../../src/limits.js";
import { errorOfReply } from "../../src/net/wire/wire-errors.js";
import type { Store } from "../../src/store.js";
import { startStack, type Stack } from "../helpers/strata-stack.js";

const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });
const W = "strata.w.s1.acct.b.x";
const R = "strata.r.s1.acct.b.x";
const MAX_SAFE = Number.MAX_SAFE_INTEGER;

let stack: Stack;
let store: Store;
let nc: NatsConnection;

beforeAll(async () => {
  stack = await startStack({ id: "s1" });
  ({ store, nc } = stack);
});

afterAll(async () => {
  await stack?.stop();
});

async function code(subject: string, body: unknown): Promise<string> {
  const reply = await nc.request(subject, cbor.encode(body), { timeout: 5000 });
  return errorOfReply(reply, () => subject)?.code ?? "OK";
}

describe("seq bounds on the wire", () => {
  it.each([
    ["stream.set at 2^53-1", W, { op: "stream.set", seq: MAX_SAFE, message: {} }],
    ["stream.set at seqMax+1", W, { op: "stream.set", seq: seqMax + 1, message: {} }],
    ["stream.set at 2^53", W, { op: "stream.set", seq: 2 ** 53, message: {} }],
    ["deleteAll endSeq 2^53-1", W, { op: "stream.deleteAll", options: { endSeq: MAX_SAFE } }],
    ["append expectedLastSeq 2^53-1", W, { op: "stream.append", message: {}, options: { expectedLastSeq: MAX_SAFE } }],
    ["changes after 2^53-1", R, { op: "changes", after: MAX_SAFE }],
  ])("%s gets INVALID_ARGUMENT", async (_name, subject, body) => {
    expect(await code(subject, body)).toBe("INVALID_ARGUMENT");
  });

  it("serves seqMax end to end, and the server keeps writing afterwards", async () => {
    expect(await code(W, { op: "stream.set", seq: seqMax, message: {} })).toBe("OK");
    expect(await code(W, { op: "stream.deleteAll", options: { endSeq: seqMax } })).toBe("OK");
    expect(await code(R, { op: "changes", after: seqMax })).toBe("OK");
    expect(await code(W, { op: "stream.append", message: {} })).toBe("TOO_LARGE");
    expect(await code("strata.w.s1.acct.b.y", { op: "stream.append", message: {} })).toBe("OK");
    expect(store.inventory("acct/b/x")).toMatchObject({ count: 0, lastSeq: seqMax });
  });
});

/**
 * Every wire input is validated: raw garbage sent with nc.request (malformed CBOR, wrong types,
 * oversize fields, unknown ops, huge counts, mismatched locations, ops on the wrong subject class)
 * gets an error reply with a stable code; the server keeps running and writes nothing.
 */
import { Encoder, decode } from "cbor-x";
import { connect, createInbox, type Msg, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StrataClient } from "../../src/net/client/client.js";
import { errorOfReply } from "../../src/net/wire/wire-errors.js";
import type { Store } from "../../src/store.js";
import type { RunningNatsServer } from "../../src/testing/nats-server.js";
import { startStack, type Stack } from "../helpers/strata-stack.js";

const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });
const W = "strata.w.s1.acct.alice.x";
const R = "strata.r.s1.acct.alice.x";

let stack: Stack;
let nats: RunningNatsServer;
let store: Store;
let nc: NatsConnection;

beforeAll(async () => {
  stack = await startStack({ id: "s1" });
  ({ nats, store, nc } = stack);
});

afterAll(async () => {
  await stack?.stop();
});

/** Sends raw bytes and returns the error code of the reply (or "OK"). */
async function code(subject: string, body: Uint8Array | unknown): Promise<string> {
  const data = body instanceof Uint8Array ? body : cbor.encode(body);
  const reply = await nc.request(subject, data, { timeout: 5000 });
  return errorOfReply(reply, () => subject)?.code ?? "OK";
}

const bytes = (...b: number[]) => new Uint8Array(b);

describe("garbage gets an error reply, never a crash, never a write", () => {
  const cases: Array<[string, string, Uint8Array | unknown, string]> = [
    ["empty body", W, new Uint8Array(0), "INVALID_ARGUMENT"],
    ["break byte", W, bytes(0xff), "INVALID_ARGUMENT"],
    ["truncated map", W, bytes(0xa2, 0x62, 0x6f, 0x70), "INVALID_ARGUMENT"],
    ["trailing bytes", W, new Uint8Array([...cbor.encode({ op: "inventory" }), 0x00]), "INVALID_ARGUMENT"],
    ["not a map", W, [1, 2, 3], "INVALID_ARGUMENT"],
    ["a string", W, "stream.append", "INVALID_ARGUMENT"],
    ["a tagged date", W, new Date(0), "INVALID_ARGUMENT"],
    ["no op", W, { message: {} }, "INVALID_ARGUMENT"],
    ["op of wrong type", W, { op: 7 }, "INVALID_ARGUMENT"],
    ["unknown op", W, { op: "stream.drop" }, "INVALID_ARGUMENT"],
    ["prototype op", W, { op: "__proto__" }, "INVALID_ARGUMENT"],
    ["unknown field", W, { op: "stream.append", message: {}, extra: 1 }, "INVALID_ARGUMENT"],
    ["message not a map", W, { op: "stream.append", message: "hi" }, "INVALID_ARGUMENT"],
    ["value of wrong type", W, { op: "stream.append", message: { value: 12 } }, "INVALID_ARGUMENT"],
    ["headers of wrong type", W, { op: "stream.append", message: { headers: { a: 1 } } }, "INVALID_ARGUMENT"],
    ["unknown option", W, { op: "stream.append", message: {}, options: { fast: true } }, "INVALID_ARGUMENT"],
    ["seq as string", W, { op: "stream.set", seq: "1", message: {} }, "INVALID_ARGUMENT"],
    ["negative seq", W, { op: "stream.set", seq: -1, message: {} }, "INVALID_ARGUMENT"],
    ["fractional seq", W, { op: "stream.delete", seq: 1.5 }, "INVALID_ARGUMENT"],
    ["key of wrong type", W, { op: "kv.set", key: 5, value: bytes(1) }, "INVALID_KEY"],
    ["oversize key", W, { op: "kv.set", key: "k".repeat(2000), value: bytes(1) }, "INVALID_KEY"],
    ["too many headers", W, { op: "stream.append", message: { headers: Object.fromEntries(Array.from({ length: 300 }, (_, i) => [`h${i}`, "v"])) } }, "TOO_LARGE"],
    ["oversize msgId", W, { op: "stream.append", message: {}, options: { msgId: "m".repeat(5000) } }, "TOO_LARGE"],
    ["items not an array", W, { op: "stream.appendMany", items: { 0: {} } }, "INVALID_ARGUMENT"],
    ["too many items", W, { op: "stream.appendMany", items: Array.from({ length: 20_000 }, () => 0) }, "TOO_LARGE"],
    ["huge declared array", W, bytes(0xa2, 0x62, 0x6f, 0x70, 0x61, 0x78, 0x65, 0x69, 0x74, 0x65, 0x6d, 0x73, 0x9b, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff), "INVALID_ARGUMENT"],
    ["deep nesting", W, new Uint8Array([...new Array(100_000).fill(0x81), 0x00]), "INVALID_ARGUMENT"],
    ["upload larger than valueBytesMax", W, { op: "upload", head: 10, bytes: 2 ** 40 }, "TOO_LARGE"],
    ["upload head too large", W, { op: "upload", head: 2 ** 30, bytes: 0 }, "TOO_LARGE"],
    ["upload without sizes", W, { op: "upload" }, "INVALID_ARGUMENT"],
    ["chunk of an unknown upload", W, { op: "chunk", upload: "nope", k: 0, data: bytes(1) }, "INVALID_ARGUMENT"],
    ["chunk without data", W, { op: "chunk", upload: "nope", k: 0 }, "INVALID_ARGUMENT"],
    ["credit of an unknown stream", R, { op: "credit", stream: "nope", n: 5 }, "INVALID_ARGUMENT"],
    ["credit of wrong type", R, { op: "credit", stream: "nope", n: "5" }, "INVALID_ARGUMENT"],
    ["changes with a huge limit", R, { op: "changes", after: 0, limit: 1e9 }, "INVALID_ARGUMENT"],
    ["changes without after", R, { op: "changes" }, "INVALID_ARGUMENT"],
    ["batch items not an array", W, { op: "batch", items: { 0: bytes(1) } }, "INVALID_ARGUMENT"],
    ["empty batch", W, { op: "batch", items: [] }, "INVALID_ARGUMENT"],
    ["batch of too many items", W, { op: "batch", items: Array.from({ length: 20_000 }, () => bytes(0xa0)) }, "INVALID_ARGUMENT"],
    ["batch item not an encoded request", W, { op: "batch", items: [cbor.encode({ op: "inventory" }), { op: "stream.append", message: {} }] }, "INVALID_ARGUMENT"],
    ["batch with an unknown field", W, { op: "batch", items: [cbor.encode({ op: "stream.get", seq: 1 })], more: true }, "INVALID_ARGUMENT"],
    ["body location disagrees with the subject", W, { op: "stream.append", message: {}, location: "acct/bob/x" }, "FORBIDDEN"],
    ["a write on the read subject", R, { op: "stream.append", message: {} }, "FORBIDDEN"],
    ["a read on the write subject", W, { op: "stream.get", seq: 1 }, "FORBIDDEN"],
    ["invalid location token", "strata.w.s1.acct.al=ce!", { op: "inventory" }, "INVALID_LOCATION"],
    // Types are checked before a value is used: String() of a map owning toString throws.
    ["location a map with a toString key", W, { op: "stream.append", message: {}, location: { toString: 1 } }, "INVALID_LOCATION"],
    ["location a map with a valueOf key", R, { op: "inventory", location: { valueOf: "x" } }, "INVALID_LOCATION"],
    ["location a number", R, { op: "inventory", location: 7 }, "INVALID_LOCATION"],
    ["too many location segments", `strata.r.s1.${Array.from({ length: 20 }, () => "a").join(".")}`, { op: "inventory" }, "INVALID_LOCATION"],
  ];

  it.each(cases)("%s → %s", async (_name, subject, body, expected) => {
    expect(await code(subject, body)).toBe(expected);
  });

  it.each([
    ["garbage", new Uint8Array([0xff, 0x00, 0x13])],
    ["a read op", cbor.encode({ op: "stream.get", seq: 1 })],
    ["a value for an op without one", cbor.encode({ op: "stream.delete", seq: 1 })],
    ["an unknown field", cbor.encode({ op: "stream.append", message: {}, sneaky: 1 })],
  ])("an upload whose request is %s is refused", async (_name, head) => {
    const inbox = createInbox();
    const got: Msg[] = [];
    let wake = () => undefined as void;
    const sub = nc.subscribe(inbox, { callback: (_e, m) => (got.push(m), wake()) });
    const next = async () => {
      while (got.length === 0) await new Promise<void>((resolve) => (wake = resolve));
      return got.shift()!;
    };
    nc.publish(W, cbor.encode({ op: "upload", head: head.byteLength, bytes: 10 }), { reply: inbox });
    const { up } = decode((await next()).data) as { up: string };
    nc.publish(W, cbor.encode({ op: "chunk", upload: up, k: 0, data: new Uint8Array([...head, ...new Uint8Array(10)]) }), { reply: inbox });
    const reply = await next();
    expect(errorOfReply(reply, () => W)?.code).toBe("INVALID_ARGUMENT");
    sub.unsubscribe();
  });

  it("a batch answers each item on its own: bad items get their error, good ones run in order", async () => {
    const B = "strata.w.s1.acct.alice.batch";
    const items = [
      bytes(0xff),
      cbor.encode({ op: "batch", items: [cbor.encode({ op: "stream.append", message: {} })] }),
      cbor.encode({ op: "upload", head: 1, bytes: 1 }),
      cbor.encode({ op: "stream.getAll" }),
      cbor.encode({ op: "stream.get", seq: 1 }),
      cbor.encode({ op: "stream.append", message: { value: bytes(7) } }),
      cbor.encode({ op: "stream.append", message: { value: bytes(8) }, options: { expectedLastSeq: 5 } }),
      cbor.encode({ op: "stream.append", message: { value: bytes(9) }, location: "acct/bob/x" }),
      cbor.encode({ op: "stream.append", message: { value: bytes(10) }, options: { expectedLastSeq: 1 } }),
    ];
    const reply = await nc.request(B, cbor.encode({ op: "batch", items }), { timeout: 5000 });
    expect(errorOfReply(reply, () => B)).toBeUndefined();
    const { ok } = decode(reply.data) as { ok: Array<{ ok: boolean; result?: { seq: number }; error?: { code: string } }> };
    expect(ok.map((r) => (r.ok ? `seq ${r.result!.seq}` : r.error!.code))).toEqual([
      "INVALID_ARGUMENT",
      "INVALID_ARGUMENT",
      "INVALID_ARGUMENT",
      "INVALID_ARGUMENT",
      "FORBIDDEN",
      "seq 1",
      "CONFLICT",
      "FORBIDDEN",
      "seq 2",
    ]);
    expect(store.inventory("acct/alice/batch")).toMatchObject({ count: 2, revision: 2 });
    expect((await store.stream("acct/alice/batch").get(1))?.value).toEqual(bytes(7));
    expect((await store.stream("acct/alice/batch").get(2))?.value).toEqual(bytes(10));
  });

  it("a batch item whose op is a map owning toString gets INVALID_ARGUMENT, not INTERNAL", async () => {
    const reply = await nc.request(W, cbor.encode({ op: "batch", items: [cbor.encode({ op: { toString: 1 } })] }), { timeout: 5000 });
    const { ok } = decode(reply.data) as { ok: Array<{ ok: boolean; error?: { code: string } }> };
    expect(ok.map((r) => r.error?.code)).toEqual(["INVALID_ARGUMENT"]);
  });

  it("left the server running and the location untouched", async () => {
    expect(store.inventory("acct/alice/x")).toMatchObject({ count: 0, revision: 0 });
    expect(await code(R, { op: "inventory" })).toBe("OK");
    expect(await code(R, { op: "inventory", location: "acct/alice/x" })).toBe("OK");
    const nc2 = await connect({ servers: nats.url });
    const client = new StrataClient(nc2, { server: "s1" });
    expect((await client.stream("acct/alice/x").append({ value: bytes(1) })).seq).toBe(1);
    client.close();
    await nc2.close();
  });
});

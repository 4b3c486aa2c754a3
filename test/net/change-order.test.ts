/**
 * The order a write's answer and its change leave the server in (src/net/server/server.ts,
 * `handChanges`): the reply to the writer goes first and the change right behind it, in the same
 * socket write, so an ack at one request in flight never waits behind its own change (nor
 * nats-server's routing of it). Watchers still get every change, in commit order, also of writes
 * that have no reply (a batch of many writers, writes issued in-process).
 */
import { encode } from "cbor-x";
import { createInbox, type Msg, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Store } from "../../src/store.js";
import { changeSubject, requestSubject } from "../../src/net/wire/subjects.js";
import { decodeMap } from "../../src/net/wire/wire-codec.js";
import { startStack, type Stack } from "../helpers/strata-stack.js";

let stack: Stack;
let nc: NatsConnection;
let store: Store;

beforeAll(async () => {
  stack = await startStack({ id: "co1" });
  ({ nc, store } = stack);
});

afterAll(async () => {
  await stack?.stop();
});

/** Resolves once `cond()` holds (a bound so a bug fails instead of hanging). */
async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((resolve) => setTimeout(resolve, 2));
  expect(cond()).toBe(true);
}

describe("a write's reply and its change", () => {
  it("reach a reader of both with the reply first, for every write at one in flight", async () => {
    const location = "order/one";
    const arrivals: string[] = [];
    const inbox = createInbox();
    const record = (what: string) => (_err: Error | null, msg: Msg) => arrivals.push(`${what}:${msg.data.byteLength > 0 ? "data" : "empty"}`);
    const replies = nc.subscribe(`${inbox}.*`, { callback: record("reply") });
    const changes = nc.subscribe(changeSubject("strata", location), { callback: record("change") });
    await nc.flush();
    const subject = requestSubject("strata", "w", "co1", location);
    for (let i = 0; i < 20; i++) {
      const before = arrivals.length;
      nc.publish(subject, encode({ op: "stream.append", message: { value: new Uint8Array([i]) } }), { reply: `${inbox}.${i}` });
      await until(() => arrivals.length === before + 2);
    }
    replies.unsubscribe();
    changes.unsubscribe();
    expect(arrivals).toEqual(Array.from({ length: 20 }, () => ["reply:data", "change:data"]).flat());
  });

  it("publishes every change in commit order, also of writes nobody is answered for", async () => {
    const location = "order/many";
    const seen: number[] = [];
    const changes = nc.subscribe(changeSubject("strata", location), {
      callback: (_err, msg) => {
        for (const c of decodeArray(msg.data)) seen.push(c.revision as number);
      },
    });
    await nc.flush();
    const s = store.stream(location);
    // In-process writes: no reply is published, the changes go out once the commit is done.
    await Promise.all(Array.from({ length: 30 }, (_, i) => s.append({ value: new Uint8Array([i]) })));
    for (let i = 0; i < 10; i++) await s.append({ value: new Uint8Array([i]) });
    await until(() => seen.length === 40);
    changes.unsubscribe();
    expect(seen).toEqual(Array.from({ length: 40 }, (_, i) => i + 1));
  });
});

function decodeArray(bytes: Uint8Array): Array<Record<string, unknown>> {
  const value = decodeMap(encodeWrap(bytes), "changes").items;
  return value as Array<Record<string, unknown>>;
}

/** A change message is a CBOR array; wrap it in a map to reuse the untrusted decoder. */
function encodeWrap(array: Uint8Array): Uint8Array {
  return Buffer.concat([Buffer.from([0xa1, 0x65, ...Buffer.from("items")]), array]);
}

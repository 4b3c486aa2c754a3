/**
 * When the client's coalescer sends (src/net/wire/client-coalesce.ts): a call on a client with
 * nothing in flight goes out as soon as its callers' callback and microtasks are done (no turn of
 * the event loop: at one request in flight that turn was waited for in vain), and the calls issued
 * together still travel as one batch, also those released while others are in flight.
 */
import type { NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StrataClient } from "../../src/net/client/client.js";
import type { StrataServer } from "../../src/net/server/server.js";
import { startStack, type Stack } from "../helpers/strata-stack.js";

const enc = (s: string) => new TextEncoder().encode(s);

let stack: Stack;
let server: StrataServer;
let nc: NatsConnection;
let client: StrataClient;

beforeAll(async () => {
  stack = await startStack({ id: "cs1" });
  ({ server, nc } = stack);
  client = new StrataClient(nc, { server: "cs1" });
});

afterAll(async () => {
  client?.close();
  await stack?.stop();
});

const requests = () => server.stats().requests;
const published = () => nc.stats().outMsgs;
const tick = () => new Promise<void>((resolve) => process.nextTick(resolve));

describe("coalescer timing", () => {
  it("sends a lone call of an idle client before the next turn of the event loop", async () => {
    const s = client.stream("cst/lone");
    await s.append({ value: enc("warm") });
    let turned = false;
    setImmediate(() => (turned = true));
    const before = published();
    const ack = s.append({ value: enc("alone") });
    await tick(); // after the coalescer's own tick, queued first
    expect(published() - before).toBe(1);
    expect(turned).toBe(false);
    expect((await ack).seq).toBe(2);
  });

  it("still sends the calls issued together as one request, and batches calls released while others are in flight", async () => {
    const s = client.stream("cst/together");
    const before = requests();
    const sent = published();
    const first = Array.from({ length: 10 }, (_, i) => s.append({ value: enc(`a${i}`) }));
    await tick();
    expect(published() - sent).toBe(1);
    // Issued from microtasks of one turn while the first batch is in flight: one more batch.
    const second: Array<Promise<{ seq: number }>> = [];
    for (let i = 0; i < 10; i++) {
      await Promise.resolve();
      second.push(s.append({ value: enc(`b${i}`) }));
    }
    const acks = await Promise.all([...first, ...second]);
    expect(requests() - before).toBe(2);
    expect(acks.map((a) => a.seq)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
  });
});

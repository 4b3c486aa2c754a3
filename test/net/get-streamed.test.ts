/**
 * The client's streamed read (kv.getStreamed / stream.getStreamed, src/net/client/get-streamed.ts)
 * against a real nats-server with a 64 KiB max_payload and an in-process server:
 * - property: for random sizes around the part and chunk-record boundaries, with random keys and
 *   headers (which move where the value starts), the concatenated chunks equal get()'s value and
 *   the meta equals get()'s other fields;
 * - the server sends only as the consumer reads: with one chunk read, the stream stops at the
 *   reply window and stays open;
 * - abandoning the chunks (return() before or during iteration, break in for-await) frees the
 *   server's reply stream. The server's replyIdleMs is a minute: only the cancel frees it here.
 */
import fc from "fast-check";
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StrataClient } from "../../src/net/client/client.js";
import { DEFAULT_NET_LIMITS } from "../../src/net/wire/net-limits.js";
import { startStack, type Stack } from "../helpers/strata-stack.js";

const KiB = 1024;
const MiB = 1024 * KiB;
const MAX_PAYLOAD = 64 * KiB;
/** Value bytes per reply part (max_payload less the frame overhead). */
const PART = MAX_PAYLOAD - DEFAULT_NET_LIMITS.frameOverheadBytes;
const WINDOW = DEFAULT_NET_LIMITS.replyWindowMessages;

let stack: Stack;
let client: StrataClient;
beforeAll(async () => {
  stack = await startStack({ id: "s1", nats: { maxPayload: MAX_PAYLOAD }, server: { limits: { replyIdleMs: 60_000 } } });
  client = new StrataClient(stack.nc, { server: "s1", timeoutMs: 10_000 });
});
afterAll(async () => {
  client?.close();
  await stack?.stop();
});

async function concat(chunks: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const out: Uint8Array[] = [];
  for await (const c of chunks) out.push(c);
  return Buffer.concat(out);
}

/** Polls `condition` every 10 ms until it holds or `ms` pass. */
async function until(condition: () => boolean, what: string, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const streamsOpen = () => stack.server.stats().replyStreamsOpen;

describe("getStreamed", () => {
  // First in the file: it counts the messages this connection receives (the server has its own).
  it("asks the server for more only as chunks are read: one chunk read, the server stops at its window", async () => {
    const value = randomBytes(4 * MiB);
    const kv = client.kv("acct/gs/paced");
    await kv.set("v", value);
    const before = stack.nc.stats().inMsgs;
    const got = (await kv.getStreamed("v"))!;
    expect(got.chunks.streamed).toBe(true);
    const first = await got.chunks.next();
    expect(first.done).toBe(false);
    // The server runs ahead of the reader by one window of parts, then waits for credit; a reader
    // that consumed as parts arrive would have let it send all 65 and end the stream.
    await until(() => stack.nc.stats().inMsgs - before >= WINDOW, "the server to fill the reply window");
    await kv.inventory(); // two round trips: time for more parts to arrive, if any were sent
    await kv.inventory();
    expect(stack.nc.stats().inMsgs - before).toBe(WINDOW + 2);
    expect(streamsOpen()).toBe(1);
    expect(stack.server.stats().replyInFlightHighWater).toBe(WINDOW);
    const rest = await concat(got.chunks);
    expect(Buffer.compare(Buffer.concat([first.value!, rest]), value)).toBe(0);
    await until(() => streamsOpen() === 0, "the reply stream to end");
  });

  it("yields exactly get()'s value and fields, for sizes around part and chunk-record boundaries", async () => {
    const record = stack.store.limits.recordBytesMax;
    const size = fc.oneof(
      fc.integer({ min: 0, max: 64 }),
      fc.tuple(fc.integer({ min: 1, max: 4 }), fc.integer({ min: -80, max: 80 })).map(([k, d]) => k * PART + d),
      fc.integer({ min: -80, max: 80 }).map((d) => record + d),
      fc.integer({ min: 1, max: 3 * MiB }),
    );
    const headers = fc.array(fc.string({ maxLength: 3000 }), { maxLength: 4 }).map((values) => Object.fromEntries(values.map((v, i) => [`h${i}`, v])));
    const keyArb = fc.stringMatching(/^[-_=.a-zA-Z0-9]{1,200}$/);
    let n = 0;
    await fc.assert(
      fc.asyncProperty(size, headers, keyArb, async (bytes, hdrs, key) => {
        n += 1;
        const value = randomBytes(bytes);
        const kv = client.kv(`acct/gs/kv${n}`);
        await kv.set(key, value, Object.keys(hdrs).length > 0 ? { headers: hdrs } : undefined);
        const stream = client.stream(`acct/gs/s${n}`);
        const { seq } = await stream.append(Object.keys(hdrs).length > 0 ? { value, headers: hdrs } : { value });

        const entry = (await kv.get(key))!;
        const got = (await kv.getStreamed(key))!;
        const { value: _v, ...fields } = entry;
        expect(got.meta).toEqual({ ...fields, bytes });
        expect(Buffer.compare(await concat(got.chunks), value)).toBe(0);

        const message = (await stream.get(seq))!;
        const gotM = (await stream.getStreamed(seq))!;
        expect(gotM.meta).toEqual({ seq, timestamp: message.timestamp, ...(message.headers ? { headers: message.headers } : {}), bytes });
        expect(Buffer.compare(await concat(gotM.chunks), message.value)).toBe(0);
        // Larger than a part: streamed. A small message without headers: one message, whole.
        if (bytes > PART) expect(gotM.chunks.streamed).toBe(true);
        if (bytes < 1000 && message.headers === undefined) expect(gotM.chunks.streamed).toBe(false);
      }),
      { numRuns: 30 },
    );
    expect(await client.kv("acct/gs/kv1").getStreamed("no-such-key")).toBeUndefined();
    expect(await client.stream("acct/gs/s1").getStreamed(99)).toBeUndefined();
    await until(() => streamsOpen() === 0, "every reply stream to end");
  });

  it("frees the server's reply stream when the chunks are abandoned, before or during iteration", async () => {
    const value = randomBytes(4 * MiB);
    const stream = client.stream("acct/gs/abandon");
    const { seq } = await stream.append({ value });

    const unread = (await stream.getStreamed(seq))!;
    expect(streamsOpen()).toBe(1);
    await unread.chunks.return();
    await until(() => streamsOpen() === 0, "the unread stream to be cancelled");

    const partly = (await stream.getStreamed(seq))!;
    let read = 0;
    for await (const chunk of partly.chunks) {
      read += chunk.byteLength;
      if (read > 3 * PART) break;
    }
    await until(() => streamsOpen() === 0, "the stream left by break to be cancelled");
    expect((await partly.chunks.next()).done).toBe(true);
    await until(() => stack.server.stats().replyBytesHeld === 0, "the server's reply budget to be free");
    expect(stack.server.stats().replyStreamsEvicted).toBe(0);
  });
});

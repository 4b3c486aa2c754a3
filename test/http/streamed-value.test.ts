/**
 * The client's streamed value path (client-call.ts StreamedValue), which the gateway uses for
 * bodies larger than its buffer: against a real nats-server and server, a value read from an
 * async source while it is uploaded arrives byte for byte; a source that gives fewer or more
 * bytes than it declared writes nothing; and a request whose source was started is never sent
 * again (a source cannot be read twice), even when the failure is one that is otherwise retried;
 * and a source that fails cancels its upload, so the server's upload slot is free at once.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import type { StreamedValue } from "../../src/net/client/client-call.js";
import { StrataClient } from "../../src/net/client/client.js";
import { startStack, type Stack } from "../helpers/strata-stack.js";

let stack: Stack;
let client: StrataClient;
beforeAll(async () => {
  // An upload abandoned without a cancel (a reply timeout) is dropped by the server after
  // uploadIdleMs, which stop() waits for. Short here, so the file is fast.
  stack = await startStack({ id: "s1", server: { limits: { uploadIdleMs: 500 } } });
  client = new StrataClient(stack.nc, { server: "s1", timeoutMs: 5_000 });
});
afterAll(async () => {
  client?.close();
  await stack?.stop();
});

/** A source of `pieces` pieces of `size` bytes (piece i filled with i), counting how often it is iterated. */
function source(pieces: number, size: number, failAfter?: number): StreamedValue & { iterations: number } {
  const value = {
    bytes: pieces * size,
    iterations: 0,
    chunks: {
      [Symbol.asyncIterator]: async function* () {
        value.iterations += 1;
        for (let i = 0; i < pieces; i++) {
          if (failAfter !== undefined && i >= failAfter) throw new StrataError("UNAVAILABLE", "the source went away");
          yield new Uint8Array(size).fill(i & 0xff);
        }
      },
    },
  };
  return value;
}

describe("streamed values", () => {
  it("uploads a value read from an async source, byte for byte, to a stream and a kv", async () => {
    const v = source(40, 100_000); // 4 MB in 100 kB pieces, larger than one NATS message
    const r = await client.stream("acct/sv/s").appendStreamed(v);
    const got = await client.stream("acct/sv/s").get(r.seq);
    expect(got?.value.length).toBe(v.bytes);
    for (let i = 0; i < 40; i++) expect(got!.value[i * 100_000 + 99_999]).toBe(i);
    const k = source(3, 7);
    await client.kv("acct/sv/kv").setStreamed("k", k, { expectedRevision: 0 });
    expect(Array.from((await client.kv("acct/sv/kv").get("k"))!.value)).toEqual([0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2]);
  });

  it("writes nothing when the source gives fewer or more bytes than declared", async () => {
    const short = { ...source(3, 1000), bytes: 3001 };
    await expect(client.stream("acct/sv/bad").appendStreamed(short)).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    const long = { ...source(3, 1000), bytes: 2999 };
    await expect(client.stream("acct/sv/bad").appendStreamed(long)).rejects.toMatchObject({ code: "INVALID_ARGUMENT" });
    expect((await client.stream("acct/sv/bad").inventory()).count).toBe(0);
  });

  it("does not send a request again once its source was read, even after a retryable failure", async () => {
    const v = source(20, 100_000, 5);
    await expect(client.stream("acct/sv/once").appendStreamed(v, { msgId: "m1" })).rejects.toMatchObject({ code: "UNAVAILABLE" });
    expect(v.iterations).toBe(1);
    expect((await client.stream("acct/sv/once").inventory()).count).toBe(0);
  });
});

describe("a source that fails", () => {
  it("cancels its upload: the server's slot is free at once, not after uploadIdleMs", async () => {
    // Slots held by abandoned uploads would stay taken for 30 s here; a client has two.
    const own = await startStack({ id: "s2", server: { limits: { uploadIdleMs: 30_000, uploadBytesPerSecMin: 1, uploadsPerClientMax: 2 } } });
    const c = new StrataClient(own.nc, { server: "s2", timeoutMs: 3_000 });
    try {
      for (let i = 0; i < 5; i++) {
        await expect(c.stream("acct/sv/cancel").appendStreamed(source(20, 100_000, 3)), `failing upload ${i}`).rejects.toThrow("the source went away");
      }
      // Every slot is back (the cancel is handled before the next request on the same subject).
      const ok = await c.stream("acct/sv/cancel").appendStreamed(source(20, 100_000));
      expect((await c.stream("acct/sv/cancel").get(ok.seq))?.value.length).toBe(2_000_000);
      expect(own.server.stats().uploadsOpen).toBe(0);
    } finally {
      c.close();
      await own.stop();
    }
  });
});

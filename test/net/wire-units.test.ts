/**
 * The pure and near-pure pieces of the wire layer, without NATS: subjects, the CBOR codec,
 * chunk slicing and reassembly (byte by byte, at every boundary), backoff, and the flow control
 * of uploads and reply streams driven through a fake connection.
 */
import fc from "fast-check";
import type { NatsConnection } from "nats";
import { describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { Reassembler, sliceChunks, windowChunks } from "../../src/net/wire/chunking.js";
import { retryDelays } from "../../src/net/client/client-call.js";
import { resolveNetLimits } from "../../src/net/wire/net-limits.js";
import { Replies } from "../../src/net/server/server-replies.js";
import { Uploads } from "../../src/net/server/server-uploads.js";
import { changeSubject, locationFromSubject, locationTokens, requestSubject, serverSubjects, validatePrefix } from "../../src/net/wire/subjects.js";
import { decodeMap, decodeUntrusted, encode, encodeWithTail, estimateBytes } from "../../src/net/wire/wire-codec.js";
import { ERROR_HEADER } from "../../src/net/wire/wire-errors.js";
import { silentLogger } from "../../src/logger.js";

describe("subjects", () => {
  it("map a location to tokens and back through the server's subscription", () => {
    expect(locationTokens("acct/alice/chat")).toBe("acct.alice.chat");
    expect(requestSubject("strata", "w", "s1", "acct/alice/chat")).toBe("strata.w.s1.acct.alice.chat");
    expect(changeSubject("p.q", "a/b")).toBe("p.q.c.a.b");
    const { r } = serverSubjects("strata", "s1");
    expect(r.wildcard).toBe("strata.r.s1.>");
    expect(locationFromSubject("strata.r.s1.acct.alice.chat", r.base)).toBe("acct/alice/chat");
    expect(locationFromSubject("strata.r.s2.acct", r.base)).toBeUndefined();
    expect(locationFromSubject("strata.r.s1.", r.base)).toBeUndefined();
  });

  it("refuse prefixes that are not plain tokens", () => {
    for (const bad of ["", "a..b", "a.*", "a.>", "a b", 5]) expect(() => validatePrefix(bad)).toThrow(StrataError);
    expect(validatePrefix("org.strata")).toBe("org.strata");
  });
});

describe("codec", () => {
  it("decodes maps and rejects everything else with INVALID_ARGUMENT", () => {
    expect(decodeMap(encode({ op: "x", v: new Uint8Array([1]) }), "t")).toEqual({ op: "x", v: Buffer.from([1]) });
    for (const bad of [new Uint8Array(0), encode([1]), encode("s"), encode(null), new Uint8Array([0xa1])]) {
      expect(() => decodeMap(bad, "t")).toThrow(expect.objectContaining({ code: "INVALID_ARGUMENT" }));
    }
  });

  it("survives truncation of a request at every offset", () => {
    const bytes = encode({ op: "stream.append", message: { value: new Uint8Array(40).fill(7), headers: { a: "b" } }, options: { msgId: "m" } });
    for (let n = 0; n < bytes.byteLength; n++) {
      try {
        decodeUntrusted(bytes.subarray(0, n), "t");
      } catch (err) {
        expect(StrataError.is(err, "INVALID_ARGUMENT")).toBe(true);
      }
    }
  });

  it("encodes a frame around a large value without copying it, byte for byte as encode would", () => {
    const sizes = [0, 1, 23, 24, 255, 256, 65_535, 65_536, 300_000];
    fc.assert(
      fc.property(fc.constantFrom(...sizes), fc.integer({ min: 1, max: 1e9 }), fc.dictionary(fc.string({ maxLength: 6 }), fc.string()), (size, seq, headers) => {
        const value = new Uint8Array(size).fill(seq & 0xff);
        const build = (tail: Uint8Array) => ({ s: "id", w: 8, items: [{ seq, headers, timestamp: 5, value: tail }] });
        const parts = encodeWithTail(build, value);
        expect(parts[2]).toBe(value);
        expect(Buffer.concat(parts).equals(Buffer.from(encode(build(value))))).toBe(true);
      }),
      { numRuns: 60 },
    );
    expect(() => encodeWithTail((tail) => ({ value: tail, after: 1 }), new Uint8Array(3))).toThrow(/last item/);
  });

  it("estimates an upper bound of the encoded size", () => {
    const value = fc.oneof(fc.string(), fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.uint8Array({ maxLength: 64 }));
    const item = fc.dictionary(fc.string({ maxLength: 8 }), fc.oneof(value, fc.array(value, { maxLength: 4 }), fc.dictionary(fc.string(), value)));
    fc.assert(fc.property(fc.array(item, { maxLength: 8 }), (items) => estimateBytes({ items }) >= encode({ items }).byteLength));
  });
});

describe("chunking", () => {
  it("slices any layout of parts into exact chunks, copying only across boundaries", () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 40 }), { maxLength: 6 }), fc.integer({ min: 1, max: 17 }), (parts, size) => {
        const chunks = [...sliceChunks(parts, size)];
        expect(Buffer.concat(chunks)).toEqual(Buffer.concat(parts));
        chunks.forEach((c, i) => (i < chunks.length - 1 ? expect(c.byteLength).toBe(size) : expect(c.byteLength).toBeGreaterThan(0)));
      }),
    );
    const big = new Uint8Array(100);
    expect([...sliceChunks([big], 10)][3]!.buffer).toBe(big.buffer);
  });

  it("reassembles parts fed one byte at a time, and refuses malformed sequences", () => {
    const frame = encode({ ok: { value: new Uint8Array(300).fill(3) } });
    const r = new Reassembler(1000);
    const parts = [...sliceChunks([frame], 1)];
    let whole: Uint8Array | undefined;
    parts.forEach((p, k) => (whole = r.push(k, p, k === parts.length - 1, k === 0 ? frame.byteLength : undefined)));
    expect(Buffer.from(whole!)).toEqual(Buffer.from(frame));
    expect(() => new Reassembler(1000).push(1, frame, false, undefined)).toThrow(/part 1/);
    expect(() => new Reassembler(10).push(0, frame, false, 11)).toThrow(expect.objectContaining({ code: "TOO_LARGE" }));
    expect(() => new Reassembler(1000).push(0, frame, true, frame.byteLength + 1)).toThrow(/declared/);
    expect(() => new Reassembler(1000).push(0, frame, false, 2)).toThrow(/larger than the declared/);
  });

  it("bounds windows and backoff", () => {
    expect(windowChunks(4 << 20, 63 << 10, 2, 64)).toBe(64);
    expect(windowChunks(1 << 20, 1 << 20, 2, 64)).toBe(2);
    // A client's retries wait between half the minimum and the maximum, growing towards it.
    const delays = retryDelays({ retryBackoffMinMs: 20, retryBackoffMaxMs: 1000 });
    const waits = Array.from({ length: 30 }, () => delays.next());
    for (const ms of waits) {
      expect(ms).toBeGreaterThanOrEqual(10);
      expect(ms).toBeLessThanOrEqual(1000);
    }
    expect(Math.min(...waits.slice(10))).toBeGreaterThanOrEqual(500);
  });
});

/** A connection that records what is published; enough for Replies and Uploads. */
function fakeConnection(maxPayload: number) {
  const published: Array<{ subject: string; body?: Record<string, unknown>; error?: string }> = [];
  const nc = {
    info: { max_payload: maxPayload },
    // The reply budget asks nats-server, with a flush, when published bytes have left.
    flush: () => Promise.resolve(),
    isClosed: () => false,
    publish(subject: string, data: Uint8Array, opts?: { headers?: { get(k: string): string } }) {
      const error = opts?.headers?.get(ERROR_HEADER);
      published.push(error ? { subject, error } : { subject, body: decodeMap(data, "published") });
    },
  } as unknown as NatsConnection;
  return { nc, published };
}

describe("upload flow control", () => {
  const limits = resolveNetLimits({ uploadWindowBytes: 4 * 7168, uploadIdleMs: 100 });
  const target = { reply: "inbox.1", client: "inbox.1", location: "a/b", cls: "w" as const };

  function setup() {
    const { nc, published } = fakeConnection(8192);
    const uploads = new Uploads(new Replies(nc, limits, silentLogger, 1 << 20), limits, 1 << 20);
    let gate!: () => void;
    const opened = new Promise<void>((resolve) => (gate = resolve));
    let received = 0;
    const run = async (_head: Record<string, unknown>, value: AsyncIterable<Uint8Array> | undefined) => {
      await opened;
      for await (const piece of value!) received += piece.byteLength;
      return { received };
    };
    const head = encode({ op: "stream.append", message: {} });
    const done = uploads.start(target, { head: head.byteLength, bytes: 10 * 7000 }, run);
    const grant = published[0]!.body as { up: string; grant: number };
    const chunk = (k: number, data: Uint8Array) => uploads.chunk("a/b", "w", { upload: grant.up, k, data }, target.reply);
    return { uploads, published, gate, done, grant, head, chunk, received: () => received };
  }

  it("grants a window, refuses a chunk beyond it, and writes nothing", async () => {
    const { published, grant, head, chunk, done, uploads, gate } = setup();
    expect(grant.grant).toBe(4);
    chunk(0, new Uint8Array([...head, ...new Uint8Array(100)]));
    for (let k = 1; k < 4; k++) chunk(k, new Uint8Array(7000));
    expect(uploads.stats().uploadBufferedBytes).toBe(100 + 3 * 7000);
    chunk(4, new Uint8Array(7000));
    expect(published.at(-1)).toMatchObject({ subject: "inbox.1", error: "INVALID_ARGUMENT" });
    expect(uploads.stats()).toMatchObject({ uploadsOpen: 0, uploadBufferedBytes: 0 });
    gate(); // the writer now pulls, and gets the failure instead of a value
    await done;
  });

  it("moves the window as the writer consumes, and completes", async () => {
    const s = setup();
    s.gate();
    s.chunk(0, new Uint8Array([...s.head, ...new Uint8Array(7000 - s.head.byteLength)]));
    let k = 1;
    let sent = 7000 - s.head.byteLength;
    while (sent < 10 * 7000) {
      const granted = Math.max(...s.published.map((p) => (p.body?.grant as number | undefined) ?? 0));
      if (k < granted) {
        const n = Math.min(7000, 10 * 7000 - sent);
        s.chunk(k++, new Uint8Array(n));
        sent += n;
      } else {
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    await s.done;
    expect(s.published.at(-1)?.body).toEqual({ ok: { received: 10 * 7000 } });
  });

  it("abandons a silent upload with TIMEOUT and fails the writer", async () => {
    const { published, head, chunk, done, gate } = setup();
    gate();
    chunk(0, new Uint8Array([...head, 1, 2, 3]));
    await done;
    expect(published.at(-1)).toMatchObject({ error: "TIMEOUT" });
  });

  it("refuses chunks out of order and beyond the declared size", () => {
    const a = setup();
    a.chunk(1, new Uint8Array(10));
    expect(a.published.at(-1)).toMatchObject({ error: "INVALID_ARGUMENT" });
    const b = setup();
    b.chunk(0, new Uint8Array(20 * 7000));
    expect(b.published.at(-1)).toMatchObject({ error: "INVALID_ARGUMENT" });
  });
});

describe("reply stream flow control", () => {
  it("never has more than the window in flight, and resumes on credit", async () => {
    const limits = resolveNetLimits({ replyWindowMessages: 3, replyIdleMs: 1000 });
    const { nc, published } = fakeConnection(8192);
    const replies = new Replies(nc, limits, silentLogger, 1 << 20);
    const stream = await replies.open({ reply: "inbox.2", location: "a/b", cls: "r" });
    let sent = 0;
    const sending = (async () => {
      for (let i = 0; i < 10; i++) {
        await stream.items([i]);
        sent += 1;
      }
      stream.end({ count: 10 });
    })();
    await new Promise((resolve) => setImmediate(resolve));
    expect(published).toHaveLength(3);
    replies.credit(stream.id, "a/b", "r", 2, false);
    await new Promise((resolve) => setImmediate(resolve));
    expect(published).toHaveLength(5);
    expect(() => replies.credit(stream.id, "a/c", "r", 9, false)).toThrow(StrataError);
    // Credit beyond what was sent is capped: consumption is all a client can report.
    replies.credit(stream.id, "a/b", "r", 100, false);
    await new Promise((resolve) => setImmediate(resolve));
    expect(published).toHaveLength(8);
    replies.credit(stream.id, "a/b", "r", 8, false);
    await sending;
    expect(sent).toBe(10);
    expect(published.at(-1)?.body).toMatchObject({ end: { count: 10 } });
    expect(replies.stats()).toMatchObject({ replyInFlightHighWater: 3, replyStreamsOpen: 0, replyBytesHeld: 0 });
  });
});

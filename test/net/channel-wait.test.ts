/**
 * Channel.next's one timer: a quiet check every `everyMs` while more than that is left of the
 * wait, then the timeout; a message or a failure ends the wait and its checks.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { Msg } from "nats";
import { Channel, type Transport } from "../../src/net/client/client-transport.js";
import { StrataError } from "../../src/errors.js";

const transport = { forget: () => undefined } as unknown as Transport;
const timeout = () => new StrataError("TIMEOUT", "no reply");
const msg = { data: new Uint8Array([1]) } as unknown as Msg;

describe("Channel.next", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("checks every interval while more than one is left, then times out", async () => {
    const ch = new Channel(transport, "t", "s");
    const quietAt: number[] = [];
    const start = Date.now();
    const wait = ch.next(3500, timeout, { everyMs: 1000, onQuiet: () => quietAt.push(Date.now() - start) });
    const settled = expect(wait).rejects.toMatchObject({ code: "TIMEOUT" });
    await vi.advanceTimersByTimeAsync(3499);
    expect(quietAt).toEqual([1000, 2000, 3000]);
    await vi.advanceTimersByTimeAsync(1);
    await settled;
    expect(Date.now() - start).toBe(3500);
    expect(quietAt).toHaveLength(3);
  });

  it("makes no check for a wait no longer than the interval, nor without one", async () => {
    const ch = new Channel(transport, "t", "s");
    const onQuiet = vi.fn();
    const short = expect(ch.next(1000, timeout, { everyMs: 1000, onQuiet })).rejects.toMatchObject({ code: "TIMEOUT" });
    await vi.advanceTimersByTimeAsync(1000);
    await short;
    const plain = expect(ch.next(2500, timeout)).rejects.toMatchObject({ code: "TIMEOUT" });
    await vi.advanceTimersByTimeAsync(2499);
    expect(vi.getTimerCount()).toBe(1);
    await vi.advanceTimersByTimeAsync(1);
    await plain;
    expect(onQuiet).not.toHaveBeenCalled();
  });

  it("a message ends the wait and its checks", async () => {
    const ch = new Channel(transport, "t", "s");
    const onQuiet = vi.fn();
    const wait = ch.next(10_000, timeout, { everyMs: 1000, onQuiet });
    await vi.advanceTimersByTimeAsync(1500);
    ch.push(msg);
    await expect(wait).resolves.toBe(msg);
    await vi.advanceTimersByTimeAsync(20_000);
    expect(onQuiet).toHaveBeenCalledTimes(1);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("a failure from inside the check ends the wait with that failure", async () => {
    const ch = new Channel(transport, "t", "s");
    const gone = new StrataError("UNAVAILABLE", "the server is gone");
    const wait = ch.next(10_000, timeout, { everyMs: 1000, onQuiet: () => ch.fail(gone) });
    const settled = expect(wait).rejects.toBe(gone);
    await vi.advanceTimersByTimeAsync(1000);
    await settled;
    expect(vi.getTimerCount()).toBe(0);
  });
});

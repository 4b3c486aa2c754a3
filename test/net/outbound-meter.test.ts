/**
 * The outbound meter's lazy flush (src/net/server/outbound-meter.ts): below `eagerBytes` pending,
 * replies are not followed each by a PING (one per request at one in flight was a round of
 * protocol work on every request); the flush still comes within `delayMs`, at once past
 * `eagerBytes`, and at once when a reply waits for room in the budget (reply-budget.ts), so the
 * over-count never keeps a reply waiting. The connection is a stand-in whose flush the test
 * answers (the PONG), as in test/net/memory.test.ts: a real nats-server answers too fast to
 * observe the order.
 */
import type { NatsConnection } from "nats";
import { describe, expect, it } from "vitest";
import { OutboundMeter } from "../../src/net/server/outbound-meter.js";
import { ReplyBudget } from "../../src/net/server/reply-budget.js";
import { DEFAULT_NET_LIMITS, resolveNetLimits } from "../../src/net/wire/net-limits.js";

function pingCounter() {
  const pongs: Array<() => void> = [];
  const nc = { isClosed: () => false, flush: () => new Promise<void>((resolve) => pongs.push(resolve)) } as unknown as NatsConnection;
  return { nc, pings: () => pongs.length, pong: () => pongs.shift()?.() };
}

const turn = () => new Promise((resolve) => setImmediate(resolve));

/** Resolves once `cond()` holds (a bound so a bug fails instead of hanging). */
async function until(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((resolve) => setTimeout(resolve, 1));
  expect(cond()).toBe(true);
}

describe("outbound meter, lazy flush", () => {
  it("does not flush after each small reply, but within a short while, and counts until the PONG", async () => {
    const c = pingCounter();
    const m = new OutboundMeter(c.nc, () => undefined, 64 * 1024);
    for (let i = 0; i < 10; i++) m.add(100);
    expect(c.pings()).toBe(0);
    expect(m.pending()).toBeGreaterThanOrEqual(1000);
    await until(() => c.pings() === 1);
    m.add(100); // published after the PING: it needs a flush of its own
    c.pong();
    await turn();
    expect(m.pending()).toBeGreaterThan(0);
    expect(m.pending()).toBeLessThan(1000);
    // The next flush is lazy again, not one PING right after another.
    expect(c.pings()).toBe(0);
    await until(() => c.pings() === 1);
    c.pong();
    await until(() => m.pending() === 0);
    m.stop();
  });

  it("flushes at once past eagerBytes, and every publish at once when eagerBytes is 0", async () => {
    const c = pingCounter();
    const m = new OutboundMeter(c.nc, () => undefined, 10_000);
    m.add(5000);
    expect(c.pings()).toBe(0);
    m.add(5000);
    expect(c.pings()).toBe(1);
    c.pong();
    await until(() => m.pending() === 0);
    const eager = pingCounter();
    const e = new OutboundMeter(eager.nc, () => undefined);
    e.add(1);
    expect(eager.pings()).toBe(1);
    m.stop();
    e.stop();
  });

  it("flushes at once when a reply waits for room the unflushed bytes hold", async () => {
    const c = pingCounter();
    let budget!: ReplyBudget;
    const m = new OutboundMeter(c.nc, () => budget.wake(), 900);
    budget = new ReplyBudget(1000, 5000, m, m);
    m.add(500);
    expect(c.pings()).toBe(0);
    const waiting = budget.reserve(600);
    expect(c.pings()).toBe(1);
    c.pong();
    const hold = await waiting;
    expect(hold.bytes).toBe(600);
    hold.release();
    m.stop();
  });

  it("names its limits, and refuses a flush delay as long as the budget wait", () => {
    expect(DEFAULT_NET_LIMITS.replyFlushDelayMs).toBeLessThan(DEFAULT_NET_LIMITS.replyBudgetWaitMs);
    expect(() => resolveNetLimits({ replyFlushDelayMs: 2000, replyBudgetWaitMs: 2000 })).toThrow(/replyFlushDelayMs/);
    expect(resolveNetLimits({ replyFlushEagerBytesMax: 1024 }).replyFlushEagerBytesMax).toBe(1024);
  });
});

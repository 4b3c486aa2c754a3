/**
 * BodyBudget (src/http/body.ts): a body without Content-Length (chunked) reserves the gateway's
 * body budget as its bytes arrive, not httpBodyBytesMax up front, so many small chunked uploads
 * fit; one that outgrows the budget is refused 503 and gives its reservation back. Requests are
 * real WHATWG Requests with streamed bodies (no network needed for the budget's bookkeeping).
 */
import { describe, expect, it } from "vitest";
import { BodyBudget } from "../../src/http/body.js";
import { HttpError } from "../../src/http/http-errors.js";

const KiB = 1024;
const MiB = 1024 * KiB;

/** A chunked request whose body is `pieces` (each of that many bytes), sent as they are read. */
function chunked(pieces: number[]): Request {
  let i = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (i < pieces.length) controller.enqueue(new Uint8Array(pieces[i++]!).fill(7));
      else controller.close();
    },
  });
  return new Request("http://127.0.0.1/kv/x/k", { method: "PUT", body, duplex: "half" } as RequestInit);
}

describe("BodyBudget, bodies without Content-Length", () => {
  const limits = { httpBodyBytesMax: 16 * MiB, httpBodyBufferBytesMax: 1 * MiB, httpBodyInflightBytesMax: 16 * MiB };

  it("holds many small chunked bodies at once within a budget of one largest body", async () => {
    const budget = new BodyBudget(limits);
    // 100 bodies of 10 KiB each: they used to reserve 16 MiB each, so the second was refused.
    const taken = await Promise.all(Array.from({ length: 100 }, () => budget.take(chunked([4 * KiB, 6 * KiB]))));
    for (const t of taken) expect(t.bytes?.byteLength).toBe(10 * KiB);
    expect(budget.inflightBytes).toBeLessThanOrEqual(limits.httpBodyInflightBytesMax);
    for (const t of taken) t.release();
    expect(budget.inflightBytes).toBe(0);
  });

  it("reserves as a chunked body grows, refuses 503 when the next step does not fit, and gives everything back", async () => {
    const budget = new BodyBudget(limits);
    const big = await budget.take(chunked(Array.from({ length: 12 }, () => MiB))); // 12 MiB held
    expect(big.bytes?.byteLength).toBe(12 * MiB);
    expect(budget.inflightBytes).toBeGreaterThanOrEqual(12 * MiB);
    const err = await budget.take(chunked(Array.from({ length: 8 }, () => MiB))).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(HttpError);
    expect((err as HttpError).status).toBe(503);
    expect((err as HttpError).message).toMatch(/without a Content-Length; nothing was written/);
    expect((err as HttpError).headers).toEqual({ connection: "close" });
    big.release();
    big.release(); // once only
    expect(budget.inflightBytes).toBe(0);
    // The budget is whole again: a body of the largest size fits.
    const again = await budget.take(chunked(Array.from({ length: 16 }, () => MiB)));
    expect(again.bytes?.byteLength).toBe(16 * MiB);
    again.release();
    expect(budget.inflightBytes).toBe(0);
  });

  it("still refuses a chunked body past httpBodyBytesMax with 413", async () => {
    const budget = new BodyBudget(limits);
    const err = await budget.take(chunked(Array.from({ length: 17 }, () => MiB))).catch((e: unknown) => e);
    expect((err as HttpError).status).toBe(413);
    expect(budget.inflightBytes).toBe(0);
  });
});

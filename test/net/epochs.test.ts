/**
 * The client's side of epochs (docs/failover.md): every result of a server under a coordinator
 * carries the epoch it was served under; the client keeps the highest epoch seen per location and
 * drops a result from an older one. A read is then asked again (and answered by the current
 * owner); a write is reported as TIMEOUT (it may or may not be part of the history), and an append
 * with a msgId is retried, so it is applied exactly once at the current owner.
 *
 * A raw responder plays two servers of one location: "new" answers with epoch 7, "old" (a server
 * that lost the location but still answers) with epoch 3. The coordinator is a raw responder too.
 */
import type { Msg, NatsConnection, Subscription } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { StrataClient } from "../../src/net/client/client.js";
import { decodeMap, encode } from "../../src/net/wire/wire-codec.js";
import { startBus, type Bus } from "../helpers/strata-stack.js";

let bus: Bus;
let nc: NatsConnection;
const subs: Subscription[] = [];

beforeAll(async () => {
  bus = await startBus();
  ({ nc } = bus);
});

afterAll(async () => {
  for (const s of subs) s.unsubscribe();
  await bus?.stop();
});

/** A stand-in server (each test has a subject prefix `P` of its own): answers every request with `result` under `epoch`, and counts them. */
function server(P: string, id: string, epoch: number, result: (body: Record<string, unknown>) => unknown): { asked: Array<Record<string, unknown>> } {
  const asked: Array<Record<string, unknown>> = [];
  const handler = (_err: unknown, msg: Msg) => {
    const body = decodeMap(msg.data, "request");
    asked.push(body);
    msg.respond(encode({ ok: result(body), e: epoch }));
  };
  subs.push(nc.subscribe(`${P}.w.${id}.>`, { callback: handler }), nc.subscribe(`${P}.r.${id}.>`, { callback: handler }));
  return { asked };
}

/** A stand-in coordinator answering locate from a script: each answer names a server and an epoch. */
function coordinator(P: string, script: Array<[string, number]>): { asked: number } {
  const state = { asked: 0 };
  subs.push(
    nc.subscribe(`${P}.coord.locate`, {
      callback: (_err, msg) => {
        const [server, epoch] = script[Math.min(state.asked, script.length - 1)]!;
        state.asked += 1;
        msg.respond(encode({ server, epoch }));
      },
    }),
  );
  return state;
}

describe("epochs on the client", () => {
  it("drops a read answered under an older epoch and asks the current owner", async () => {
    const P = "ep1";
    const fresh = server(P, "new", 7, () => ({ seq: 1, value: new TextEncoder().encode("fresh"), timestamp: 1 }));
    const stale = server(P, "old", 3, () => ({ seq: 1, value: new TextEncoder().encode("stale"), timestamp: 1 }));
    const coord = coordinator(P, [["new", 7]]);
    await nc.flush();
    const client = new StrataClient(nc, { prefix: P, timeoutMs: 3000, limits: { coalesceItemsMax: 1 } });
    const s = client.stream("acct/e/one");
    // Epoch 7 seen first, from the current owner.
    expect(new TextDecoder().decode((await s.get(1))!.value)).toBe("fresh");
    // The client is then sent to the old owner (a stale cache elsewhere would do the same).
    (client as unknown as { caller: { servers: Map<string, string> } }).caller.servers.set("acct/e/one", "old");
    const again = await s.get(1);
    expect(new TextDecoder().decode(again!.value)).toBe("fresh");
    expect(stale.asked.length).toBe(1);
    expect(fresh.asked.length).toBe(2);
    expect(coord.asked).toBeGreaterThanOrEqual(2);
    client.close();
  });

  it("reports a write answered under an older epoch as TIMEOUT, and retries an append with a msgId", async () => {
    const P = "ep2";
    const fresh = server(P, "new2", 9, () => ({ seq: 5, revision: 5, timestamp: 1 }));
    const stale = server(P, "old2", 2, () => ({ seq: 4, revision: 4, timestamp: 1 }));
    coordinator(P, [["new2", 9]]);
    await nc.flush();
    // One request per call (no coalesced batches): the stand-in servers answer single ops only.
    const client = new StrataClient(nc, { prefix: P, timeoutMs: 2000, limits: { coalesceItemsMax: 1 } });
    const s = client.stream("acct/e/two");
    await s.get(1); // sees epoch 9
    const servers = (client as unknown as { caller: { servers: Map<string, string> } }).caller.servers;
    servers.set("acct/e/two", "old2");
    const err = await s.append({ value: new Uint8Array(1) }).catch((e: unknown) => e);
    expect(StrataError.is(err, "TIMEOUT")).toBe(true);
    expect((err as Error).message).toMatch(/older epoch/);
    servers.set("acct/e/two", "old2");
    const before = fresh.asked.length;
    const r = await s.append({ value: new Uint8Array(1) }, { msgId: "m-1" });
    expect(r.seq).toBe(5);
    expect(fresh.asked.length).toBe(before + 1);
    expect(stale.asked.length).toBe(2);
    client.close();
  });
});

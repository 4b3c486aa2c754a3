/**
 * How a client finds the server of a location without a pinned server: it asks the coordinator
 * (`P.coord.locate`), caches the answer per location, and asks again when the server does not
 * answer (no responders) or the coordinator says UNAVAILABLE, retrying with backoff within the
 * call's budget. Ends with the real coordinator, which the server registers with (register + renew).
 */
import type { Msg, NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { StrataClient } from "../../src/net/client/client.js";
import { startCoordinator } from "../../src/net/coord/coordinator.js";
import { startServer, type StrataServer } from "../../src/net/server/server.js";
import { decodeMap, encode } from "../../src/net/wire/wire-codec.js";
import { errorHeaders } from "../../src/net/wire/wire-errors.js";
import { startBus, type Bus } from "../helpers/strata-stack.js";

const enc = (s: string) => new TextEncoder().encode(s);

let bus: Bus;
let nc: NatsConnection;
let server: StrataServer;

const tempDir = () => bus.tempDir("locate");

beforeAll(async () => {
  bus = await startBus();
  ({ nc } = bus);
  server = await startServer({ dir: await tempDir(), nats: bus.nats.url, id: "s1", prefix: "fake" });
});

afterAll(async () => {
  await server?.stop();
  await bus?.stop();
});

/**
 * A stand-in coordinator answering locate requests from a script of replies (what the real one
 * cannot be made to do on cue). To the server it grants everything: a lease on register and
 * renew, epoch 1 on every claim, no stale epochs on confirm.
 */
function fakeCoordinator(answers: Array<string | "UNAVAILABLE">): { asked: string[]; registered: Promise<void>; stop(): void } {
  const asked: string[] = [];
  let onRegistered!: () => void;
  const registered = new Promise<void>((resolve) => (onRegistered = resolve));
  const sub = nc.subscribe("fake.coord.*", {
    callback: (_err, msg: Msg) => {
      const body = decodeMap(msg.data, "request");
      switch (msg.subject) {
        case "fake.coord.register":
          msg.respond(encode({ incarnation: 1, leaseMs: 10_000, leaseRenewMs: 2000, leaseMarginMs: 2000 }));
          return onRegistered();
        case "fake.coord.claim":
          return msg.respond(encode({ grants: (body.locations as string[]).map((location) => ({ location, epoch: 1 })) }));
        case "fake.coord.confirm":
          return msg.respond(encode({ stale: [] }));
        case "fake.coord.locate":
          break;
        default:
          return msg.respond(encode({ ok: true }));
      }
      asked.push(String(body.location));
      const answer = answers[Math.min(asked.length - 1, answers.length - 1)]!;
      if (answer === "UNAVAILABLE") msg.respond(new Uint8Array(0), { headers: errorHeaders(new StrataError("UNAVAILABLE", "no live server")) });
      else msg.respond(encode({ server: answer, epoch: 1 }));
    },
  });
  return { asked, registered, stop: () => sub.unsubscribe() };
}

describe("locating through the coordinator", () => {
  it("caches the answer, and re-asks when the server gives no response", async () => {
    const coord = fakeCoordinator(["gone", "s1"]);
    // The server has retried registering since beforeAll (with backoff, up to a second apart on a
    // loaded machine): until it holds a lease it answers UNAVAILABLE, which would add locates.
    await coord.registered;
    const client = new StrataClient(nc, { prefix: "fake", timeoutMs: 9000 });
    const s = client.stream("loc/a");
    expect((await s.append({ value: enc("x") })).seq).toBe(1);
    expect(coord.asked).toEqual(["loc/a", "loc/a"]);
    await s.get(1);
    await s.inventory();
    expect(coord.asked).toHaveLength(2);
    await client.stream("loc/b").inventory();
    expect(coord.asked).toEqual(["loc/a", "loc/a", "loc/b"]);
    coord.stop();
    client.close();
  });

  it("retries while the coordinator reports UNAVAILABLE", async () => {
    const coord = fakeCoordinator(["UNAVAILABLE", "UNAVAILABLE", "s1"]);
    const client = new StrataClient(nc, { prefix: "fake", timeoutMs: 9000 });
    expect((await client.kv("loc/kv").set("k", enc("v"))).revision).toBe(1);
    expect(coord.asked).toHaveLength(3);
    coord.stop();
    client.close();
  });

  it("gives up with UNAVAILABLE and a hint when there is no coordinator", async () => {
    const client = new StrataClient(nc, { prefix: "nobody", timeoutMs: 300 });
    const err = await client.stream("loc/a").get(1).catch((e: unknown) => e);
    expect(StrataError.is(err, "UNAVAILABLE")).toBe(true);
    expect((err as Error).message).toMatch(/coordinator/);
    client.close();
  });

  it("works end to end with the real coordinator and a registered server", async () => {
    const coordinator = await startCoordinator({ nc, dataDir: await tempDir(), prefix: "real" });
    const real = await startServer({ dir: await tempDir(), nats: nc, id: "r1", prefix: "real" });
    const client = new StrataClient(nc, { prefix: "real", timeoutMs: 5000 });
    const s = client.stream("acct/alice/chat");
    const { seq } = await s.append({ value: enc("via coordinator") });
    expect(new TextDecoder().decode((await s.get(seq))?.value)).toBe("via coordinator");
    client.close();
    await real.stop();
    await coordinator.stop();
  });
});

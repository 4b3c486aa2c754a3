/**
 * Proves the shipped deploy/nats-server.conf against a real nats-server: the file is loaded as
 * is and only its `listen` line is replaced (the shared helper puts nats-server on 127.0.0.1 and
 * a free port from the command line). First with raw nats.js connections, then end to end with
 * a Strata server, the coordinator and StrataClients.
 *
 * How "cannot" is shown without sleeping: nats-server answers a forbidden publish or subscribe
 * with `-ERR 'Permissions Violation …'`, which nats.js reports as a status event. The server sends
 * that error only after it has dropped the message, so once the event is seen, a control message
 * sent afterwards on an allowed subject is delivered to the watching subscriber after anything the
 * forbidden message could have produced. The watcher receiving the control and nothing else is
 * the proof that the forbidden message went nowhere.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { encode } from "cbor-x";
import { Events, connect, type Msg, type NatsConnection, type NatsError, type Subscription } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StrataClient } from "../../src/net/client/client.js";
import { startCoordinator, type Coordinator } from "../../src/net/coord/coordinator.js";
import { startServer, type StrataServer } from "../../src/net/server/server.js";
import type { Change } from "../../src/types.js";
import { decodeBody, type ServerView } from "../../src/net/wire/coordinator-protocol.js";
import { errorOfReply } from "../../src/net/wire/wire-errors.js";
import { startNatsServer, type RunningNatsServer } from "../../src/testing/nats-server.js";
import { fakeServer, type FakeServer } from "../helpers/fake-coord-server.js";
import { codeOf } from "../helpers/codes.js";

const CONFIG_PATH = new URL("../../deploy/nats-server.conf", import.meta.url);
const WAIT_MS = 5000;
const SERVER_ID = "srv-1";
const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

/**
 * Starts nats-server with deploy/nats-server.conf exactly as shipped except its one `listen` line,
 * which is replaced by a comment: the shared helper gives 127.0.0.1 and a free port on the
 * command line instead.
 */
async function startShippedConfig(): Promise<RunningNatsServer> {
  const original = await readFile(CONFIG_PATH, "utf8");
  expect(original.match(/^listen:.*$/gm) ?? []).toHaveLength(1);
  return startNatsServer({ config: original.replace(/^listen:.*$/m, "# listen: given on the command line by the test helper") });
}

const PASSWORDS: Record<string, string> = {
  "strata-server": "change-me-server",
  "strata-coordinator": "change-me-coordinator",
  "strata-admin": "change-me-admin",
  alice: "change-me-alice",
  bob: "change-me-bob",
  "alice-ro": "change-me-alice-ro",
};

interface User {
  nc: NatsConnection;
  /** Resolves when nats-server reports a permissions violation for this operation and subject. */
  violation(operation: "publish" | "subscription", subject: string): Promise<void>;
}

let nats: RunningNatsServer;
const users = new Map<string, User>();
let server: NatsConnection;
/** Subjects of every request the fake persistence server received, in order. */
const serverSaw: string[] = [];
let serverSawNext: (() => void) | undefined;
let coordinator: Coordinator;
let leaseHolder: FakeServer | undefined;
let coordDir: string;

/** Connects as `user`, with the inbox prefix the config expects unless `inboxPrefix` is null. */
async function login(user: string, inboxPrefix: string | null = `_INBOX.${user}`): Promise<User> {
  const nc = await connect({ servers: nats.url, user, pass: PASSWORDS[user], ...(inboxPrefix ? { inboxPrefix } : {}) });
  const seen: Array<{ operation: string; subject: string }> = [];
  const waiters = new Set<() => void>();
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === Events.Error && s.data === "PERMISSIONS_VIOLATION" && s.permissionContext) {
        seen.push({ operation: s.permissionContext.operation, subject: s.permissionContext.subject });
        for (const w of [...waiters]) w();
      }
    }
  })();
  return {
    nc,
    violation(operation, subject) {
      return new Promise<void>((resolve, reject) => {
        const check = () => {
          if (!seen.some((v) => v.operation === operation && v.subject === subject)) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve();
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`no permissions violation for ${operation} to ${subject}; seen ${JSON.stringify(seen)}`));
        }, WAIT_MS);
        waiters.add(check);
        check();
      });
    },
  };
}

function as(user: string): User {
  const u = users.get(user);
  if (!u) throw new Error(`not logged in: ${user}`);
  return u;
}

/** Waits until the fake persistence server has received a request on `subject`. */
async function serverReceives(subject: string): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!serverSaw.includes(subject)) {
    if (Date.now() > deadline) throw new Error(`server never received ${subject}; saw ${JSON.stringify(serverSaw)}`);
    await new Promise<void>((resolve) => {
      serverSawNext = resolve;
      setTimeout(resolve, 50);
    });
  }
}

/** Collects what one subscription receives; `until` waits for a message on `subject`. */
function watch(nc: NatsConnection, subject: string): { got: string[]; until(subject: string): Promise<void>; sub: Subscription } {
  const got: string[] = [];
  const sub = nc.subscribe(subject);
  const iterator = sub[Symbol.asyncIterator]();
  return {
    got,
    sub,
    async until(wanted) {
      const deadline = setTimeout(() => sub.unsubscribe(), WAIT_MS);
      try {
        while (!got.includes(wanted)) {
          const next = await iterator.next();
          if (next.done) throw new Error(`${wanted} never arrived on ${subject}; got ${JSON.stringify(got)}`);
          got.push((next.value as Msg).subject);
        }
      } finally {
        clearTimeout(deadline);
      }
    },
  };
}

/** The stack of the raw-connection tests: the shipped config, a stand-in server, a real coordinator. */
async function setUpRawStack(): Promise<void> {
  nats = await startShippedConfig();

  // A stand-in persistence server with the strata-server user: answers every request with "ok".
  server = await connect({ servers: nats.url, user: "strata-server", pass: PASSWORDS["strata-server"], inboxPrefix: "_INBOX.strata-server" });
  const handler = (err: NatsError | null, msg: Msg) => {
    if (err) return;
    serverSaw.push(msg.subject);
    serverSawNext?.();
    if (msg.reply) msg.respond(enc("ok"));
  };
  server.subscribe(`strata.w.${SERVER_ID}.>`, { callback: handler });
  server.subscribe(`strata.r.${SERVER_ID}.>`, { callback: handler });
  await server.flush();

  // The real coordinator, connected as strata-coordinator, proves that user's rights suffice.
  coordDir = await mkdtemp(join(tmpdir(), "strata-sec-coord-"));
  const coordNc = await connect({ servers: nats.url, user: "strata-coordinator", pass: PASSWORDS["strata-coordinator"] });
  coordinator = await startCoordinator({ nc: coordNc, dataDir: coordDir });
  // The stand-in server holds a lease the way a real one does, through the strata-server user.
  leaseHolder = await fakeServer(server, "strata", SERVER_ID);
  await leaseHolder.register();
  leaseHolder.startRenewing();

  for (const name of ["alice", "bob", "alice-ro", "strata-admin"]) users.set(name, await login(name));
}

async function tearDownRawStack(): Promise<void> {
  await leaseHolder?.stop();
  await coordinator?.stop();
  for (const u of users.values()) await u.nc.close();
  await server?.close();
  await nats?.stop();
  if (coordDir) await rm(coordDir, { recursive: true, force: true });
}

describe("deploy/nats-server.conf, raw nats.js connections", () => {
  beforeAll(setUpRawStack);
  afterAll(tearDownRawStack);

  it("lets alice write and read her own locations and follow their changes", async () => {
    const alice = as("alice");
    const reply = await alice.nc.request(`strata.w.${SERVER_ID}.acct.alice.chat`, enc("append"), { timeout: WAIT_MS });
    expect(dec(reply.data)).toBe("ok");
    const read = await alice.nc.request(`strata.r.${SERVER_ID}.acct.alice.deep.path.x`, enc("get"), { timeout: WAIT_MS });
    expect(dec(read.data)).toBe("ok");

    const changes = watch(alice.nc, "strata.c.acct.alice.>");
    await alice.nc.flush();
    server.publish("strata.c.acct.alice.chat", enc("change"));
    await changes.until("strata.c.acct.alice.chat");
    changes.sub.unsubscribe();
  });

  it("stops alice from writing or reading bob's locations", async () => {
    const alice = as("alice");
    for (const cls of ["w", "r"]) {
      const bobs = `strata.${cls}.${SERVER_ID}.acct.bob.chat`;
      // nats.js fails the request when the server reports the violation for its subject.
      await expect(alice.nc.request(bobs, enc("x"), { timeout: WAIT_MS })).rejects.toMatchObject({ code: "PERMISSIONS_VIOLATION" });
      await alice.violation("publish", bobs);
      const control = `strata.${cls}.${SERVER_ID}.acct.alice.control-${cls}`;
      alice.nc.publish(control, enc("x"));
      await serverReceives(control);
      expect(serverSaw.filter((s) => s.includes(".acct.bob."))).toEqual([]);
    }
  });

  it("stops alice from following bob's changes or reading anyone else's replies", async () => {
    const alice = as("alice");
    for (const subject of ["strata.c.acct.bob.>", "strata.c.>", "_INBOX.>", "_INBOX.bob.>"]) {
      const sub = alice.nc.subscribe(subject);
      await alice.violation("subscription", subject);
      sub.unsubscribe();
    }
  });

  it("lets alice-ro read but not write alice's locations", async () => {
    const ro = as("alice-ro");
    const read = await ro.nc.request(`strata.r.${SERVER_ID}.acct.alice.chat`, enc("get"), { timeout: WAIT_MS });
    expect(dec(read.data)).toBe("ok");
    const write = `strata.w.${SERVER_ID}.acct.alice.chat-ro`;
    ro.nc.publish(write, enc("x"));
    await ro.violation("publish", write);
    const control = `strata.r.${SERVER_ID}.acct.alice.control-ro`;
    ro.nc.publish(control, enc("x"));
    await serverReceives(control);
    expect(serverSaw).not.toContain(write);
  });

  it("stops clients from publishing changes", async () => {
    const alice = as("alice");
    const follower = watch(as("alice-ro").nc, "strata.c.acct.alice.>");
    await as("alice-ro").nc.flush();
    alice.nc.publish("strata.c.acct.alice.chat", enc("forged change"));
    await alice.violation("publish", "strata.c.acct.alice.chat");
    server.publish("strata.c.acct.alice.control", enc("real change"));
    await follower.until("strata.c.acct.alice.control");
    expect(follower.got).toEqual(["strata.c.acct.alice.control"]);
    follower.sub.unsubscribe();
  });

  it("stops clients from acting as a server towards the coordinator, while the coordinator works for them", async () => {
    const alice = as("alice");
    for (const subject of ["register", "renew", "claim", "cut", "confirm", "release", "move", "drain"]) {
      alice.nc.publish(`strata.coord.${subject}`, encode({ id: "evil", incarnation: 1, startedAt: 1, load: {} }));
      await alice.violation("publish", `strata.coord.${subject}`);
    }
    // alice may locate (and the coordinator's reply reaches her inbox).
    const located = await alice.nc.request("strata.coord.locate", encode({ location: "acct/alice/chat" }), { timeout: WAIT_MS });
    expect(errorOfReply(located, () => "locate")).toBeUndefined();
    expect(decodeBody(located.data, "locate reply")).toMatchObject({ server: SERVER_ID });
    // Only the operator may list servers; alice's forged registrations never reached the coordinator.
    await expect(alice.nc.request("strata.coord.servers", new Uint8Array(0), { timeout: WAIT_MS })).rejects.toMatchObject({
      code: "PERMISSIONS_VIOLATION",
    });
    const list = await as("strata-admin").nc.request("strata.coord.servers", new Uint8Array(0), { timeout: WAIT_MS });
    const { servers } = decodeBody(list.data, "servers reply") as { servers: ServerView[] };
    expect(servers.map((s) => s.id)).toEqual([SERVER_ID]);
  });

  it("lets only the coordinator push grants to a server (strata.s.<id>.grant)", async () => {
    // A forged push could hand a server a location it does not hold: clients and the servers'
    // own user are refused by nats-server before anything reaches the subject.
    const pushes = watch(server, `strata.s.${SERVER_ID}.grant`);
    await server.flush();
    const forged = encode({ incarnation: 1, key: "k".repeat(24), grants: [["acct/alice/forged", 1]] });
    as("alice").nc.publish(`strata.s.${SERVER_ID}.grant`, forged);
    await as("alice").violation("publish", `strata.s.${SERVER_ID}.grant`);
    const s = await login("strata-server");
    try {
      s.nc.publish(`strata.s.${SERVER_ID}.grant`, forged);
      await s.violation("publish", `strata.s.${SERVER_ID}.grant`);
    } finally {
      await s.nc.close();
    }
    // The coordinator's own user may publish there (the control message proves delivery works).
    const coordUser = await connect({ servers: nats.url, user: "strata-coordinator", pass: PASSWORDS["strata-coordinator"] });
    try {
      coordUser.publish(`strata.s.${SERVER_ID}.grant`, enc("control"));
      await coordUser.flush();
    } finally {
      await coordUser.close();
    }
    await pushes.until(`strata.s.${SERVER_ID}.grant`);
    expect(pushes.got).toEqual([`strata.s.${SERVER_ID}.grant`]);
    pushes.sub.unsubscribe();
  });

  it("keeps the servers' own user from acting as a client", async () => {
    // A compromised persistence server still cannot issue requests or read the change feed.
    const s = await login("strata-server", null);
    try {
      await expect(s.nc.request("strata.coord.locate", encode({ location: "acct/bob/x" }), { timeout: WAIT_MS })).rejects.toMatchObject({
        code: "PERMISSIONS_VIOLATION",
      });
      const sub = s.nc.subscribe("strata.c.>");
      await s.violation("subscription", "strata.c.>");
      sub.unsubscribe();
    } finally {
      await s.nc.close();
    }
  });

  it("refuses unknown users, wrong passwords, and a client without its own inbox prefix", async () => {
    await expect(connect({ servers: nats.url })).rejects.toMatchObject({ code: "AUTHORIZATION_VIOLATION" });
    await expect(connect({ servers: nats.url, user: "alice", pass: "wrong" })).rejects.toMatchObject({ code: "AUTHORIZATION_VIOLATION" });
    const plain = await login("alice", null);
    try {
      await expect(plain.nc.request(`strata.r.${SERVER_ID}.acct.alice.chat`, enc("x"), { timeout: WAIT_MS })).rejects.toMatchObject({
        code: "PERMISSIONS_VIOLATION",
      });
    } finally {
      await plain.nc.close();
    }
  });
});

/**
 * The same config with the real pieces: a Strata server as strata-server, the coordinator as
 * strata-coordinator, and StrataClients as alice, bob and alice-ro (each connection with its own
 * inbox prefix, which the client uses for its replies).
 */
describe("deploy/nats-server.conf, end to end with StrataClient and a Strata server", () => {
  let e2e: RunningNatsServer;
  let strata: StrataServer;
  let coord: Coordinator;
  const conns: NatsConnection[] = [];
  const dirs: string[] = [];
  const clients = new Map<string, StrataClient>();

  const natsAs = async (user: string, inboxPrefix?: string): Promise<NatsConnection> => {
    const nc = await connect({ servers: e2e.url, user, pass: PASSWORDS[user], ...(inboxPrefix ? { inboxPrefix } : {}) });
    conns.push(nc);
    return nc;
  };
  const client = (user: string): StrataClient => clients.get(user)!;

  beforeAll(async () => {
    e2e = await startShippedConfig();
    for (let i = 0; i < 2; i++) dirs.push(await mkdtemp(join(tmpdir(), "strata-sec-e2e-")));
    // batchItemsMax 1 makes a getAll send one message per item, to exceed allow_responses' max.
    strata = await startServer({ id: "srv-e2e", dir: dirs[0]!, nats: await natsAs("strata-server", "_INBOX.strata-server"), limits: { batchItemsMax: 1 } });
    coord = await startCoordinator({ nc: await natsAs("strata-coordinator", "_INBOX.strata-coordinator"), dataDir: dirs[1]! });
    const admin = await natsAs("strata-admin", "_INBOX.strata-admin");
    const deadline = Date.now() + WAIT_MS;
    for (;;) {
      const reply = await admin.request("strata.coord.servers", new Uint8Array(0), { timeout: WAIT_MS });
      const { servers } = decodeBody(reply.data, "servers reply") as { servers: ServerView[] };
      if (servers.some((s) => s.id === "srv-e2e" && s.live)) break;
      if (Date.now() > deadline) throw new Error("the coordinator never saw srv-e2e");
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    for (const user of ["alice", "bob", "alice-ro"]) clients.set(user, new StrataClient(await natsAs(user, `_INBOX.${user}`), { timeoutMs: 3000 }));
  });

  afterAll(async () => {
    for (const c of clients.values()) c.close();
    await strata?.stop();
    await coord?.stop();
    for (const nc of conns) await nc.close();
    await e2e?.stop();
    for (const dir of dirs) await rm(dir, { recursive: true, force: true });
  });

  it("serves alice's own locations, including long streamed reads and chunked uploads", async () => {
    const chat = client("alice").stream("acct/alice/chat");
    expect((await chat.append({ value: enc("hello") })).seq).toBe(1);
    const many = await chat.appendMany(Array.from({ length: 1200 }, (_, i) => ({ message: { value: enc(`m${i}`) } })));
    expect(many.every((r) => r.ok)).toBe(true);
    // 1201 batches and an end marker on one reply subject: more than allow_responses' max of
    // 1000, so this passes only because the client's credits renew the server's allowance.
    let count = 0;
    for await (const m of chat.getAll()) {
      count += 1;
      if (count === 1) expect(dec(m.value)).toBe("hello");
    }
    expect(count).toBe(1201);

    // A value larger than max_payload travels as an upload: grants to the reply, chunks back.
    const big = new Uint8Array(3 * 1024 * 1024).map((_, i) => i % 251);
    await client("alice").kv("acct/alice/blobs").set("big", big);
    expect(Buffer.compare((await client("alice").kv("acct/alice/blobs").get("big"))!.value, big)).toBe(0);
  });

  it("refuses alice on bob's locations with FORBIDDEN, and bob's data stays his", async () => {
    const bobChat = client("bob").stream("acct/bob/chat");
    await bobChat.append({ value: enc("bob's secret") });
    const aliceOnBob = client("alice").stream("acct/bob/chat");
    expect(await codeOf(aliceOnBob.append({ value: enc("forged") }))).toBe("FORBIDDEN");
    expect(await codeOf(aliceOnBob.get(1))).toBe("FORBIDDEN");
    expect(await codeOf(client("alice").kv("acct/bob/settings").set("k", enc("v")))).toBe("FORBIDDEN");
    expect((await bobChat.inventory()).count).toBe(1);
    expect(dec((await bobChat.get(1))!.value)).toBe("bob's secret");
  });

  it("lets only the operator ask a server to compact (strata.s.<id>.compact), as shipped", async () => {
    const admin = await natsAs("strata-admin", "_INBOX.strata-admin");
    const reply = await admin.request("strata.s.srv-e2e.compact", encode({ dryRun: true }), { timeout: WAIT_MS });
    expect(errorOfReply(reply, () => "compact")).toBeUndefined();
    expect(decodeBody(reply.data, "compact reply")).toMatchObject({ dryRun: true });
    // alice may not publish it: nats-server refuses, the server never sees the request.
    const alice = await natsAs("alice", "_INBOX.alice");
    await expect(alice.request("strata.s.srv-e2e.compact", encode({}), { timeout: 1000 })).rejects.toThrow();
  });

  it("pushes the grant of a new location to its server through the shipped permissions: no claim", async () => {
    const before = strata.stats().ownership!;
    expect((await client("alice").stream("acct/alice/fresh-push").append({ value: enc("first") })).seq).toBe(1);
    const after = strata.stats().ownership!;
    expect(after.pushed).toBe(before.pushed + 1);
    expect(after.claims).toBe(before.claims);
  });

  it("lets alice-ro read and watch alice's locations but not write them", async () => {
    const roChat = client("alice-ro").stream("acct/alice/chat");
    expect(dec((await roChat.get(1))!.value)).toBe("hello");
    expect(await codeOf(roChat.append({ value: enc("nope") }))).toBe("FORBIDDEN");

    const last = (await roChat.inventory()).lastSeq;
    const watch = roChat.watch({ startSeq: last + 1 });
    try {
      const next = watch.next();
      const { seq } = await client("alice").stream("acct/alice/chat").append({ value: enc("live") });
      const change = (await next).value as Change;
      expect(change).toMatchObject({ location: "acct/alice/chat", op: "set", seq });
    } finally {
      watch.stop();
    }
    expect((await roChat.inventory()).lastSeq).toBe(last + 1);
  });
});

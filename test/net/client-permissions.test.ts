/**
 * The client under nats-server permissions like deploy/nats-server.conf: a user limited to its
 * own locations, with its own inbox prefix, can write, read (streamed, with credits), upload
 * large values and watch; a write it may not do fails at once with FORBIDDEN instead of timing out.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { StrataClient } from "../../src/net/client/client.js";
import { startServer, type StrataServer } from "../../src/net/server/server.js";
import { startNatsServer, type RunningNatsServer } from "../../src/testing/nats-server.js";

const CONFIG = `
max_payload: 65536
authorization {
  users = [
    { user: "srv", password: "srv", permissions: {
        publish: { allow: ["strata.c.>", "strata.coord.heartbeat"] }
        subscribe: { allow: ["strata.w.*.>", "strata.r.*.>"] }
        allow_responses: { max: 1000000, expires: "10m" } } }
    { user: "alice", password: "alice", permissions: {
        publish: { allow: ["strata.w.*.acct.alice.>", "strata.r.*.acct.alice.>"] }
        subscribe: { allow: ["strata.c.acct.alice.>", "_INBOX.alice.>"] } } }
    { user: "reader", password: "reader", permissions: {
        publish: { allow: ["strata.r.*.acct.alice.>"] }
        subscribe: { allow: ["strata.c.acct.alice.>", "_INBOX.reader.>"] } } }
  ]
}
`;
const enc = (s: string) => new TextEncoder().encode(s);

let nats: RunningNatsServer;
let dir: string;
let server: StrataServer;
const conns: NatsConnection[] = [];

async function login(user: string): Promise<StrataClient> {
  const nc = await connect({ servers: nats.url, user, pass: user, inboxPrefix: `_INBOX.${user}` });
  conns.push(nc);
  return new StrataClient(nc, { server: "s1", timeoutMs: 3000 });
}

beforeAll(async () => {
  nats = await startNatsServer({ config: CONFIG });
  dir = await mkdtemp(join(tmpdir(), "strata-perm-"));
  server = await startServer({ standalone: true, dir, id: "s1", nats: nats.url, natsOptions: { user: "srv", pass: "srv" } });
});

afterAll(async () => {
  for (const nc of conns) await nc.close();
  await server?.stop();
  await nats?.stop();
  await rm(dir, { recursive: true, force: true });
});

describe("a user limited to its own locations", () => {
  it("writes, uploads, reads streamed replies and watches its own locations", async () => {
    const alice = await login("alice");
    const s = alice.stream("acct/alice/chat");
    const watch = s.watch();
    await s.append({ value: enc("hi") });
    const big = randomBytes(300 * 1024);
    const { seq } = await s.append({ value: big });
    expect(Buffer.compare((await s.get(seq))!.value, big)).toBe(0);
    const seqs = [];
    for await (const m of s.getAll()) seqs.push(m.seq);
    expect(seqs).toEqual([1, 2]);
    expect((await watch.next()).value).toMatchObject({ op: "set", seq: 1 });
    // Live, a value over max_payload comes as `chunked` (read it with get); a replay carries it whole.
    expect((await watch.next()).value).toMatchObject({ op: "set", seq: 2, size: big.byteLength });
    watch.stop();
  });

  it("gets FORBIDDEN at once for what it may not do", async () => {
    const alice = await login("alice");
    const started = Date.now();
    const err = await alice.stream("acct/bob/chat").append({ value: enc("x") }).catch((e: unknown) => e);
    expect(StrataError.is(err, "FORBIDDEN")).toBe(true);
    expect(Date.now() - started).toBeLessThan(2000);
    const reader = await login("reader");
    expect((await reader.stream("acct/alice/chat").get(1))?.seq).toBe(1);
    const denied = await reader.stream("acct/alice/chat").append({ value: enc("x") }).catch((e: unknown) => e);
    expect(StrataError.is(denied, "FORBIDDEN")).toBe(true);
    expect((await reader.stream("acct/alice/chat").inventory()).count).toBe(2);
  });
});

/**
 * Secure transport end to end, with deploy/secure/ as shipped: the shipped make-keys.sh makes a CA,
 * TLS certificates and nkey seeds into a temp dir, and nats-server runs the shipped
 * deploy/secure/nats-server.conf unchanged (only its environment variables come from the test;
 * the helper gives 127.0.0.1 and a free port on the command line). Real `strata coordinator` and
 * `strata server` processes connect with --tls-ca/--tls-cert/--tls-key and --nkey; StrataClients
 * connect the same way, through natsOptions (the CLI's own code) and through plain nats.js options
 * (what a library user writes).
 *
 * What is shown: writes and reads work over TLS for nkey users; nats-server refuses a plaintext
 * client, a TLS client without a certificate, one whose certificate comes from another CA, and one
 * with an unknown nkey; a user writing outside its locations gets FORBIDDEN and nothing is written
 * (read back as the owner); an operator command works with the same flags; and bad flags (two ways
 * to log in, unreadable or malformed files) are refused before connecting, naming the flag and file.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import tls from "node:tls";
import { promisify } from "node:util";
import { connect, nkeyAuthenticator, nkeys, type ConnectionOptions, type NatsConnection } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectNats, natsOptions, type NatsFlags } from "../../src/cli/nats-flags.js";
import { StrataError } from "../../src/errors.js";
import { StrataClient } from "../../src/net/client/client.js";
import { decodeBody, type ServerView } from "../../src/net/wire/coordinator-protocol.js";
import { startNatsServer, type RunningNatsServer } from "../../src/testing/nats-server.js";
import { codeOf } from "../helpers/codes.js";
import { runCli } from "../../src/testing/process.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const CONFIG = join(ROOT, "deploy/secure/nats-server.conf");
const MAKE_KEYS = join(ROOT, "deploy/secure/make-keys.sh");
const SERVER_ID = "srv-1";
const WAIT_MS = 30_000;
const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);
const run = promisify(execFile);

let tmp: string;
let keys: string;
/** A second run of make-keys.sh: the same identities under another CA, with other nkeys. */
let otherKeys: string;
let nats: RunningNatsServer;
const children: Array<{ child: ChildProcess; exited: Promise<number | null> }> = [];
const conns: NatsConnection[] = [];
const clients: StrataClient[] = [];

/** The CLI's NATS flags for identity `id` of the shipped key set in `dir`. */
function flagsOf(id: string, dir = keys): NatsFlags {
  return {
    nats: nats.url,
    nkey: join(dir, `${id}.nk`),
    natsInboxPrefix: `_INBOX.${id}`,
    tlsCa: join(keys, "ca.pem"),
    tlsCert: join(dir, `${id}-cert.pem`),
    tlsKey: join(dir, `${id}-key.pem`),
  };
}

const cliArgs = (flags: NatsFlags): string[] => [
  "--nats", flags.nats, "--nkey", flags.nkey!, "--nats-inbox-prefix", flags.natsInboxPrefix!,
  "--tls-ca", flags.tlsCa!, "--tls-cert", flags.tlsCert!, "--tls-key", flags.tlsKey!,
];

/** Connects like the CLI does (but fails at once rather than retrying), and keeps it for cleanup. */
async function connectAs(id: string, dir = keys): Promise<NatsConnection> {
  const nc = await connect({ ...natsOptions(flagsOf(id, dir), `test-${id}`), maxReconnectAttempts: 0 });
  conns.push(nc);
  return nc;
}

/** `strata …` as a child process (our own, signalled only by its PID). */
function strata(args: string[]): { child: ChildProcess; exited: Promise<number | null>; output: () => string } {
  const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", ...args], { cwd: ROOT, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (d: Buffer) => (output += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  children.push({ child, exited });
  return { child, exited, output: () => output };
}

/**
 * One connection spoken by hand: reads nats-server's INFO, then (with `tls`) does the TLS
 * handshake trusting the CA, with `certDir`'s alice certificate if given, and sends CONNECT and
 * PING. `outcome` is "error: <code>" for a TLS error, else "closed: <what arrived>".
 */
function rawSession(tlsOptions: { certDir?: string } | null): Promise<{ info: Record<string, unknown>; outcome: string }> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: "127.0.0.1", port: nats.port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error("no outcome within 10 s"));
    }, 10_000);
    let head = "";
    const onHead = (d: Buffer): void => {
      head += d.toString();
      if (!head.includes("\r\n")) return;
      socket.off("data", onHead);
      const info = JSON.parse(head.slice(head.indexOf("{"), head.indexOf("\r\n"))) as Record<string, unknown>;
      let got = "";
      const done = (outcome: string) => {
        clearTimeout(timer);
        resolve({ info, outcome });
      };
      const hello = 'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n';
      if (tlsOptions === null) {
        socket.on("data", (x: Buffer) => (got += x.toString()));
        // nats-server may reset rather than close; either way nothing came back.
        socket.on("close", () => done(`closed: ${got}`));
        socket.write(hello);
        return;
      }
      const dir = tlsOptions.certDir;
      const secure = tls.connect({
        socket,
        servername: "localhost",
        ca: readFileSync(join(keys, "ca.pem")),
        ...(dir !== undefined ? { cert: readFileSync(join(dir, "alice-cert.pem")), key: readFileSync(join(dir, "alice-key.pem")) } : {}),
      });
      let error: string | undefined;
      secure.on("secureConnect", () => secure.write(hello));
      secure.on("data", (x: Buffer) => (got += x.toString()));
      secure.on("error", (err: NodeJS.ErrnoException) => (error ??= `error: ${err.code}`));
      secure.on("close", () => done(error ?? `closed: ${got}`));
    };
    socket.on("data", onHead);
    socket.on("error", (err) => {
      if (head.includes("\r\n")) return; // after INFO: the close (or the TLS error) tells
      clearTimeout(timer);
      reject(err);
    });
  });
}

/** Parses make-keys.sh's nats-server.env (KEY='value' lines). */
async function readEnv(file: string): Promise<Record<string, string>> {
  const env: Record<string, string> = {};
  for (const line of (await readFile(file, "utf8")).split("\n")) {
    const m = /^([A-Z_]+)=(?:'([^']*)'|(.*))$/.exec(line);
    if (m) env[m[1]!] = m[2] ?? m[3]!;
  }
  return env;
}

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), "strata-secure-"));
  keys = join(tmp, "keys");
  otherKeys = join(tmp, "other-keys");
  await Promise.all([run("bash", [MAKE_KEYS, keys]), run("bash", [MAKE_KEYS, otherKeys])]);
  const env = await readEnv(join(keys, "nats-server.env"));
  expect(Object.keys(env).sort()).toEqual(
    ["CA", "CERT", "KEY", "LISTEN", "NKEY_ADMIN", "NKEY_ALICE", "NKEY_BOB", "NKEY_COORDINATOR", "NKEY_SERVER"].map((k) => `STRATA_NATSD_${k}`),
  );
  nats = await startNatsServer({ configFile: CONFIG, env });

  const coordinator = strata(["coordinator", "--data", join(tmp, "coordinator"), ...cliArgs(flagsOf("strata-coordinator"))]);
  const server = strata(["server", "--id", SERVER_ID, "--data", join(tmp, "server"), ...cliArgs(flagsOf("strata-server"))]);
  // Ready = the coordinator answers the operator and lists the server as live (it registered
  // over TLS with its nkey); a child that exits first fails the set-up with its output.
  const admin = await connectAs("strata-admin");
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    for (const [what, c] of [["coordinator", coordinator], ["server", server]] as const) {
      if (c.child.exitCode !== null) throw new Error(`strata ${what} exited (${c.child.exitCode}):\n${c.output()}`);
    }
    const reply = await admin.request("strata.coord.servers", new Uint8Array(0), { timeout: 2000 }).catch(() => undefined);
    if (reply) {
      const { servers } = decodeBody(reply.data, "servers reply") as { servers: ServerView[] };
      if (servers.some((s) => s.id === SERVER_ID && s.live)) break;
    }
    if (Date.now() > deadline) throw new Error(`the server never became live:\ncoordinator:\n${coordinator.output()}\nserver:\n${server.output()}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
});

afterAll(async () => {
  for (const c of clients) c.close();
  for (const nc of conns) await nc.close().catch(() => undefined);
  for (const { child, exited } of children.reverse()) {
    if (child.exitCode === null && child.signalCode === null) process.kill(child.pid!, "SIGTERM");
    const timer = setTimeout(() => child.exitCode === null && child.signalCode === null && process.kill(child.pid!, "SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }
  await nats?.stop();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe("deploy/secure as shipped: TLS-only nats-server with nkey users", () => {
  it("serves alice (connected like the CLI) and bob (plain nats.js options) over TLS with their nkeys", async () => {
    const alice = new StrataClient(await connectAs("alice"), { timeoutMs: 10_000 });
    clients.push(alice);
    expect((await alice.stream("acct/alice/chat").append({ value: enc("hello over tls") })).seq).toBe(1);
    expect(dec((await alice.stream("acct/alice/chat").get(1))!.value)).toBe("hello over tls");
    await alice.kv("acct/alice/settings").set("theme", enc("dark"));
    expect(dec((await alice.kv("acct/alice/settings").get("theme"))!.value)).toBe("dark");

    // What a library user writes: nats.js's own TLS options and nkeyAuthenticator.
    const seed = enc((await readFile(join(keys, "bob.nk"), "utf8")).trim());
    const bobNc = await connect({
      servers: nats.url,
      tls: { caFile: join(keys, "ca.pem"), certFile: join(keys, "bob-cert.pem"), keyFile: join(keys, "bob-key.pem") },
      authenticator: nkeyAuthenticator(seed),
      inboxPrefix: "_INBOX.bob",
      maxReconnectAttempts: 0,
    });
    conns.push(bobNc);
    expect(bobNc.info?.tls_required).toBe(true);
    const bob = new StrataClient(bobNc, { timeoutMs: 10_000 });
    clients.push(bob);
    expect((await bob.stream("acct/bob/chat").append({ value: enc("bob's") })).seq).toBe(1);
  });

  it("refuses alice outside her locations with FORBIDDEN, and writes nothing there", async () => {
    const alice = new StrataClient(await connectAs("alice"), { timeoutMs: 10_000 });
    const bob = new StrataClient(await connectAs("bob"), { timeoutMs: 10_000 });
    clients.push(alice, bob);
    await bob.stream("acct/bob/diary").append({ value: enc("bob's secret") });
    expect(await codeOf(alice.stream("acct/bob/diary").append({ value: enc("forged") }))).toBe("FORBIDDEN");
    expect(await codeOf(alice.kv("acct/bob/settings").set("theme", enc("forged")))).toBe("FORBIDDEN");
    expect(await codeOf(alice.stream("other/place").append({ value: enc("stray") }))).toBe("FORBIDDEN");
    expect(await codeOf(alice.stream("acct/bob/diary").get(1))).toBe("FORBIDDEN");
    // Read back as the owner: only bob's own record, no kv key.
    const diary = await bob.stream("acct/bob/diary").inventory();
    expect(diary.count).toBe(1);
    expect(dec((await bob.stream("acct/bob/diary").get(1))!.value)).toBe("bob's secret");
    expect(await bob.kv("acct/bob/settings").get("theme")).toBeUndefined();
  });

  it("refuses a plaintext client, a client without a certificate and one from another CA, in the TLS handshake", async () => {
    // Speaking the protocol by hand shows who refuses what: nats-server announces tls_required,
    // drops plaintext, and answers a missing or foreign client certificate with a TLS alert.
    const plain = await rawSession(null);
    expect(plain.info.tls_required).toBe(true);
    expect(plain.outcome).toBe("closed: ");
    expect((await rawSession({})).outcome).toBe("error: ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE");
    expect((await rawSession({ certDir: otherKeys })).outcome).toBe("error: ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE");
    // The control: the right certificate gets through TLS, to be stopped by authentication.
    expect((await rawSession({ certDir: keys })).outcome).toMatch(/^closed: -ERR 'Authorization Violation'/);

    // The same through nats.js (a StrataClient's connection): each attempt fails.
    const alice = flagsOf("alice");
    const base: ConnectionOptions = { servers: nats.url, maxReconnectAttempts: 0, inboxPrefix: "_INBOX.alice", timeout: 3000 };
    const aliceAuth = natsOptions(alice, "x").authenticator;
    await Promise.all([
      // No CA: the client does not trust nats-server and stops (nats.js upgrades to TLS itself).
      expect(connect({ ...base, authenticator: aliceAuth })).rejects.toMatchObject({ code: "UNABLE_TO_VERIFY_LEAF_SIGNATURE" }),
      expect(connect({ ...base, authenticator: aliceAuth, tls: { caFile: alice.tlsCa } })).rejects.toThrow(),
      expect(connect({ ...base, ...natsOptions({ ...alice, tlsCert: join(otherKeys, "alice-cert.pem"), tlsKey: join(otherKeys, "alice-key.pem") }, "x"), maxReconnectAttempts: 0 })).rejects.toThrow(),
    ]);
  });

  it("refuses unknown nkeys and a client with a certificate but no nkey", async () => {
    const alice = flagsOf("alice");
    const base: ConnectionOptions = { servers: nats.url, maxReconnectAttempts: 0, inboxPrefix: "_INBOX.alice" };
    // The right certificate, but an nkey nats-server does not know: the other run's, and a new one.
    await expect(connect({ ...base, ...natsOptions({ ...alice, nkey: join(otherKeys, "alice.nk") }, "x"), maxReconnectAttempts: 0 })).rejects.toMatchObject({ code: "AUTHORIZATION_VIOLATION" });
    const stranger = join(tmp, "stranger.nk");
    await writeFile(stranger, dec(nkeys.createUser().getSeed()) + "\n", { mode: 0o600 });
    await expect(connect({ ...base, ...natsOptions({ ...alice, nkey: stranger }, "x"), maxReconnectAttempts: 0 })).rejects.toMatchObject({ code: "AUTHORIZATION_VIOLATION" });
    // As the CLI reports it (strata server, coordinator, http connect through this).
    const refused = await connectNats({ ...alice, nkey: stranger }, "x").then(() => undefined, (err: unknown) => err);
    expect(StrataError.is(refused, "UNAVAILABLE"), String(refused)).toBe(true);
    expect((refused as Error).message).toMatch(/cannot connect to NATS at nats:\/\/127\.0\.0\.1:\d+: .*Authorization Violation.* is this --nkey's public key/);
    // The right certificate and no credentials at all.
    await expect(connect({ ...base, tls: natsOptions(alice, "x").tls })).rejects.toMatchObject({ code: "AUTHORIZATION_VIOLATION" });
    // And the same identity, done right, still gets in (the refusals were not a broken server).
    const ok = await connectAs("alice");
    expect(ok.isClosed()).toBe(false);
  });

  it("keeps the permissions of deploy/nats-server.conf (the same rules, in the same order)", async () => {
    const rules = async (file: string) => (await readFile(join(ROOT, file), "utf8")).match(/^\s*(publish|subscribe|allow_responses):.*$/gm)!.map((l) => l.trim());
    const secure = await rules("deploy/secure/nats-server.conf");
    // strata-server (3 rules), strata-coordinator (3), strata-admin, alice, bob (2 each); the
    // plain file has alice-ro after them.
    expect(secure).toHaveLength(12);
    expect(secure).toEqual((await rules("deploy/nats-server.conf")).slice(0, 12));
  });

  it("runs an operator command (strata compact --server) with the same flags", async () => {
    const compact = await runCli(["compact", "--server", SERVER_ID, "--dry-run", "--json", ...cliArgs(flagsOf("strata-admin"))], 60_000);
    expect(compact.code, compact.stdout + compact.stderr).toBe(0);
    expect(JSON.parse(compact.stdout.trim().split("\n").pop()!)).toMatchObject({ server: SERVER_ID });
  });
});

describe("NATS flags: refused before connecting", () => {
  const errorOf = (flags: Partial<NatsFlags>): StrataError => {
    try {
      natsOptions({ nats: "nats://127.0.0.1:1", ...flags }, "t");
    } catch (err) {
      expect(StrataError.is(err, "INVALID_ARGUMENT"), String(err)).toBe(true);
      return err as StrataError;
    }
    throw new Error(`flags were accepted: ${JSON.stringify(flags)}`);
  };

  it("refuses two ways to authenticate, and a half of --user/--pass or --tls-cert/--tls-key", () => {
    const nk = join(keys, "alice.nk");
    expect(errorOf({ nkey: nk, creds: "/x.creds" }).message).toMatch(/not --creds and --nkey/);
    expect(errorOf({ nkey: nk, user: "u", pass: "p" }).message).toMatch(/not --user\/--pass and --nkey/);
    expect(errorOf({ user: "u" }).message).toMatch(/--user needs --pass/);
    expect(errorOf({ pass: "p" }).message).toMatch(/--pass needs --user/);
    expect(errorOf({ tlsCert: join(keys, "alice-cert.pem") }).message).toMatch(/--tls-cert and --tls-key go together/);
  });

  it("names the flag and the file that cannot be read or is not what it should be", async () => {
    const missing = join(tmp, "missing.pem");
    expect(errorOf({ tlsCa: missing }).message).toContain(`${missing} (--tls-ca)`);
    expect(errorOf({ tlsCert: missing, tlsKey: join(keys, "alice-key.pem") }).message).toContain(`${missing} (--tls-cert)`);
    // A certificate given as the key, a key given as the CA.
    expect(errorOf({ tlsCert: join(keys, "alice-cert.pem"), tlsKey: join(keys, "alice-cert.pem") }).message).toMatch(/alice-cert\.pem \(--tls-key\) holds no PEM "PRIVATE KEY"/);
    expect(errorOf({ tlsCa: join(keys, "alice-key.pem") }).message).toMatch(/\(--tls-ca\) holds no PEM "CERTIFICATE"/);
    expect(errorOf({ nkey: missing }).message).toContain(`cannot read the nkey seed file ${missing} (--nkey)`);
    // A public key is not a seed; a server seed is not a user seed.
    expect(errorOf({ nkey: join(keys, "alice.pub") }).message).toMatch(/alice\.pub \(--nkey\) holds no valid seed/);
    const serverSeed = join(tmp, "server-seed.nk");
    await writeFile(serverSeed, dec(nkeys.createServer().getSeed()));
    expect(errorOf({ nkey: serverSeed }).message).toMatch(/not a user seed/);
  });

  it("makes the CLI exit 1 with the message, without connecting", async () => {
    const c = await runCli(["coordinator", "--data", join(tmp, "never"), ...cliArgs(flagsOf("strata-coordinator")), "--creds", join(keys, "x.creds")], 60_000);
    expect(c.code).toBe(1);
    expect(c.stdout + c.stderr).toMatch(/INVALID_ARGUMENT: use one way to authenticate to NATS, not --creds and --nkey/);
  });
});

/**
 * The NATS connection flags every command that connects shares (server, coordinator, move, drain,
 * compact --server, http): where (`--nats`), who (`--user/--pass`, `--creds`, `--nkey`), which
 * inbox (`--nats-inbox-prefix`) and TLS (`--tls-ca`, `--tls-cert`, `--tls-key`), turned into
 * nats.js `ConnectionOptions`.
 *
 * Invariants:
 * - At most one way to authenticate: --user/--pass (both), --creds, or --nkey. Anything else is
 *   refused with INVALID_ARGUMENT before a connection is tried, so a typo never falls back to an
 *   unauthenticated connection.
 * - Every file a flag names is read once here, so an unreadable or malformed file is an
 *   INVALID_ARGUMENT naming the flag and the file, not a TLS or auth failure later. TLS files are
 *   passed to nats.js by path, which reads them again on each (re)connect, so renewed certificates
 *   are picked up on the next reconnect. The nkey seed is read once, at start.
 */
import fs from "node:fs";
import type { Command } from "commander";
import { connect, credsAuthenticator, nkeyAuthenticator, nkeys, type ConnectionOptions, type NatsConnection } from "nats";
import { StrataError } from "../errors.js";

export interface NatsFlags {
  nats: string;
  user?: string;
  pass?: string;
  creds?: string;
  nkey?: string;
  natsInboxPrefix?: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
}

/** The keys of NatsFlags (commands that use NATS only in one mode refuse them in the other). */
export const NATS_FLAG_KEYS = ["nats", "user", "pass", "creds", "nkey", "natsInboxPrefix", "tlsCa", "tlsCert", "tlsKey"] as const;

export function addNatsFlags(command: Command): Command {
  return command
    .requiredOption("--nats <url>", "NATS server URL(s), comma-separated")
    .option("--user <user>", "NATS user (with --pass)")
    .option("--pass <password>", "NATS password (with --user)")
    .option("--creds <file>", "NATS credentials file (JWT + nkey)")
    .option("--nkey <file>", "file holding the NATS user's nkey seed (SU…), for an nkey user of nats-server")
    .option("--nats-inbox-prefix <prefix>", "inbox of this process's own requests (match the NATS user's subscribe permission, e.g. _INBOX.strata-server)")
    .option("--tls-ca <file>", "CA certificate (PEM) to verify nats-server with")
    .option("--tls-cert <file>", "client certificate (PEM) for nats-server (with --tls-key)")
    .option("--tls-key <file>", "client private key (PEM) for nats-server (with --tls-cert)");
}

/** NATS connection options for a long-running Strata process: reconnect forever, named. */
export function natsOptions(flags: NatsFlags, name: string): ConnectionOptions {
  const options: ConnectionOptions = { servers: flags.nats.split(","), name, maxReconnectAttempts: -1 };
  checkAuthFlags(flags);
  if (flags.user !== undefined) {
    options.user = flags.user;
    options.pass = flags.pass;
  }
  if (flags.natsInboxPrefix !== undefined) options.inboxPrefix = flags.natsInboxPrefix;
  if (flags.creds !== undefined) options.authenticator = credsAuthenticator(readFlagFile(flags.creds, "--creds", "credentials file"));
  if (flags.nkey !== undefined) options.authenticator = nkeyAuthenticator(readSeed(flags.nkey));
  return withTls(options, flags);
}

/**
 * Connects with `options` (by default `natsOptions(flags, name)`); a failure is UNAVAILABLE naming
 * the URL, with a hint where the cause is likely the TLS or login set-up (nats-server's log has the
 * exact reason: a refused TLS handshake reaches nats.js only as a connect TIMEOUT).
 */
export async function connectNats(flags: NatsFlags, name: string, options: ConnectionOptions = natsOptions(flags, name)): Promise<NatsConnection> {
  try {
    return await connect(options);
  } catch (err) {
    const code = (err as { code?: string }).code;
    const hint =
      code === "AUTHORIZATION_VIOLATION"
        ? " (nats-server does not know these credentials: is this --nkey's public key, user or creds in its config?)"
        : code === "TIMEOUT" && options.tls !== undefined
          ? " (with TLS, a handshake nats-server refused looks like this: does it trust the CA of --tls-cert? its log says)"
          : "";
    throw new StrataError("UNAVAILABLE", `cannot connect to NATS at ${flags.nats}: ${(err as Error).message}${hint}`, { cause: err });
  }
}

function checkAuthFlags(flags: NatsFlags): void {
  if ((flags.user === undefined) !== (flags.pass === undefined)) {
    throw new StrataError("INVALID_ARGUMENT", flags.user === undefined ? "--pass needs --user (the NATS user it belongs to)" : "--user needs --pass (the NATS user's password)");
  }
  const ways = [flags.user !== undefined ? "--user/--pass" : undefined, flags.creds !== undefined ? "--creds" : undefined, flags.nkey !== undefined ? "--nkey" : undefined].filter(
    (w): w is string => w !== undefined,
  );
  if (ways.length > 1) throw new StrataError("INVALID_ARGUMENT", `use one way to authenticate to NATS, not ${ways.join(" and ")}: --user/--pass, --creds FILE or --nkey FILE`);
}

/** Adds TLS to `options` when any --tls-* flag is given; checks that each file is readable PEM. */
function withTls(options: ConnectionOptions, flags: NatsFlags): ConnectionOptions {
  if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined)) {
    throw new StrataError("INVALID_ARGUMENT", "--tls-cert and --tls-key go together (the client certificate and its private key)");
  }
  if (flags.tlsCa === undefined && flags.tlsCert === undefined) return options;
  if (flags.tlsCa !== undefined) checkPem(flags.tlsCa, "--tls-ca", "CA certificate", "CERTIFICATE");
  if (flags.tlsCert !== undefined) {
    checkPem(flags.tlsCert, "--tls-cert", "client certificate", "CERTIFICATE");
    checkPem(flags.tlsKey!, "--tls-key", "client private key", "PRIVATE KEY");
  }
  return {
    ...options,
    tls: {
      ...(flags.tlsCa !== undefined ? { caFile: flags.tlsCa } : {}),
      ...(flags.tlsCert !== undefined ? { certFile: flags.tlsCert, keyFile: flags.tlsKey! } : {}),
    },
  };
}

function readFlagFile(file: string, flag: string, what: string): Uint8Array {
  try {
    return fs.readFileSync(file);
  } catch (cause) {
    throw new StrataError("INVALID_ARGUMENT", `cannot read the ${what} ${file} (${flag}): ${(cause as Error).message}`, { cause });
  }
}

/** A PEM file must hold a block of `label` ("PRIVATE KEY" also matches "RSA/EC PRIVATE KEY"). */
function checkPem(file: string, flag: string, what: string, label: string): void {
  const text = Buffer.from(readFlagFile(file, flag, what)).toString("latin1");
  if (!new RegExp(`-----BEGIN [A-Z ]*${label}-----`).test(text)) {
    throw new StrataError("INVALID_ARGUMENT", `the ${what} ${file} (${flag}) holds no PEM "${label}" block; give the PEM file`);
  }
}

/** The user seed in an nkey seed file: its one non-empty, non-comment line, checked. */
function readSeed(file: string): Uint8Array {
  const text = Buffer.from(readFlagFile(file, "--nkey", "nkey seed file")).toString("utf8");
  const lines = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#") && !l.startsWith("//"));
  const bad = (why: string) => new StrataError("INVALID_ARGUMENT", `the nkey seed file ${file} (--nkey) ${why}; it must hold one user seed (a line starting with SU, e.g. from \`nk -gen user\`)`);
  if (lines.length !== 1) throw bad(lines.length === 0 ? "is empty" : `has ${lines.length} lines`);
  const seed = new TextEncoder().encode(lines[0]);
  try {
    const kp = nkeys.fromSeed(seed);
    if (!kp.getPublicKey().startsWith("U")) throw bad("holds a seed that is not a user seed");
  } catch (err) {
    if (StrataError.is(err)) throw err;
    throw bad("holds no valid seed");
  }
  return seed;
}

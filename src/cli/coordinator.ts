/**
 * `strata coordinator --data DIR --nats URL [--lease-ms N] [--prefix P] [--user U --pass P | --creds FILE]`:
 * runs the coordinator until SIGTERM or SIGINT, then stops answering, lets in-flight requests
 * finish, closes its LMDB state and drains the NATS connection before exiting 0.
 *
 * Also exports the two pieces `strata up` reuses: NATS connection options from flags, and
 * graceful shutdown on signals.
 */
import fs from "node:fs";
import type { Command } from "commander";
import { connect, credsAuthenticator, type ConnectionOptions } from "nats";
import { StrataError } from "../errors.js";
import { startCoordinator, type Coordinator } from "../net/coord/coordinator.js";
import { DEFAULT_PREFIX } from "../net/wire/coordinator-protocol.js";
import { DEFAULT_INBOX_PREFIX } from "../net/wire/subjects.js";

export interface NatsFlags {
  nats: string;
  user?: string;
  pass?: string;
  creds?: string;
  natsInboxPrefix?: string;
}

interface CoordinatorFlags extends NatsFlags {
  data: string;
  prefix: string;
  leaseMs?: string;
  leaseRenewMs?: string;
  leaseMarginMs?: string;
  inboxPrefix: string;
}

/** NATS connection options for a long-running Strata process: reconnect forever, named. */
export function natsOptions(flags: NatsFlags, name: string): ConnectionOptions {
  const options: ConnectionOptions = { servers: flags.nats.split(","), name, maxReconnectAttempts: -1 };
  if ((flags.user === undefined) !== (flags.pass === undefined)) {
    throw new StrataError("INVALID_ARGUMENT", "--user and --pass go together");
  }
  if (flags.creds !== undefined && flags.user !== undefined) {
    throw new StrataError("INVALID_ARGUMENT", "use either --creds or --user/--pass, not both");
  }
  if (flags.user !== undefined) {
    options.user = flags.user;
    options.pass = flags.pass;
  }
  if (flags.natsInboxPrefix !== undefined) options.inboxPrefix = flags.natsInboxPrefix;
  if (flags.creds !== undefined) {
    let creds: Uint8Array;
    try {
      creds = fs.readFileSync(flags.creds);
    } catch (cause) {
      throw new StrataError("INVALID_ARGUMENT", `cannot read the credentials file ${flags.creds}: ${(cause as Error).message}`, { cause });
    }
    options.authenticator = credsAuthenticator(creds);
  }
  return options;
}

/**
 * Calls `shutdown` once on the first SIGTERM or SIGINT, then exits 0 (1 if shutdown failed).
 * A second signal while shutting down exits at once, for an operator who does not want to wait.
 */
export function exitOnSignal(what: string, shutdown: () => Promise<void>): void {
  let stopping = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      process.stderr.write(`${what}: ${signal} again, exiting without waiting\n`);
      process.exit(1);
    }
    stopping = true;
    process.stderr.write(`${what}: ${signal}, shutting down\n`);
    shutdown().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`${what}: shutdown failed: ${(err as Error)?.stack ?? String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
}

export function addNatsFlags(command: Command): Command {
  return command
    .requiredOption("--nats <url>", "NATS server URL(s), comma-separated")
    .option("--user <user>", "NATS user (with --pass)")
    .option("--pass <password>", "NATS password (with --user)")
    .option("--creds <file>", "NATS credentials file (JWT + nkey)")
    .option("--nats-inbox-prefix <prefix>", "inbox of this process's own requests (match the NATS user's subscribe permission, e.g. _INBOX.strata-server)");
}

export function register(program: Command): void {
  const command = program
    .command("coordinator")
    .description("run the coordinator: grants leases and epochs, answers which server holds a location, moves locations of dead servers")
    .requiredOption("--data <dir>", "directory of the coordinator's state (LMDB)")
    .option("--prefix <prefix>", "subject prefix", DEFAULT_PREFIX)
    .option("--lease-ms <ms>", "a server's lease (default 10000); servers learn it when they register")
    .option("--lease-renew-ms <ms>", "how often servers renew (default lease/5)")
    .option("--lease-margin-ms <ms>", "margin for message delay and clock-rate skew (default lease/5)")
    .option("--inbox-prefix <prefix>", "answer only reply subjects below this prefix (your clients' inboxPrefix)", DEFAULT_INBOX_PREFIX);
  addNatsFlags(command).action(async (flags: CoordinatorFlags) => {
    const limits = {
      ...msFlag(flags.leaseMs, "--lease-ms", "leaseMs"),
      ...msFlag(flags.leaseRenewMs, "--lease-renew-ms", "leaseRenewMs"),
      ...msFlag(flags.leaseMarginMs, "--lease-margin-ms", "leaseMarginMs"),
    };
    const nc = await connect(natsOptions(flags, "strata-coordinator"));
    let coordinator: Coordinator;
    try {
      coordinator = await startCoordinator({
        nc,
        dataDir: flags.data,
        prefix: flags.prefix,
        inboxPrefix: flags.inboxPrefix,
        limits,
        onWarning: (m) => log(`warning: ${m}`),
        onEvent: log,
      });
    } catch (err) {
      await nc.close();
      throw err;
    }
    const l = coordinator.limits;
    log(`coordinator ready on ${flags.prefix}.coord.* via ${nc.getServer()}, state in ${flags.data}, lease ${l.leaseMs} ms (renew ${l.leaseRenewMs}, margin ${l.leaseMarginMs})`);
    void nc.closed().then((err) => {
      // Closed by anything but our own shutdown (e.g. the server refused the credentials).
      if (err) {
        log(`NATS connection closed: ${err.message}`);
        process.exit(1);
      }
    });
    exitOnSignal("strata coordinator", async () => {
      await coordinator.stop();
      await nc.drain();
    });
  });
}

/** A positive integer flag as a limit, or nothing when absent; anything else is refused. */
export function msFlag(value: string | undefined, flag: string, name: string): Record<string, number> {
  if (value === undefined) return {};
  const n = Number(value);
  if (!/^[0-9]+$/.test(value) || !Number.isSafeInteger(n) || n <= 0) throw new StrataError("INVALID_ARGUMENT", `${flag} must be a positive integer (ms), got ${JSON.stringify(value)}`);
  return { [name]: n };
}

function log(line: string): void {
  process.stdout.write(`${new Date().toISOString()} ${line}\n`);
}

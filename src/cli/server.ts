/**
 * `strata server --id NAME --data DIR --nats URL [--prefix strata] [--creds FILE | --user U --pass P]
 *  [--tls-ca FILE --tls-cert FILE --tls-key FILE] [--tier dir:/path | --tier s3://…] [--cache-bytes N]
 *  [--seal-interval-ms N] [--fsync always|interval] [--inbox-prefix _INBOX] [--standalone] [--no-compaction]`:
 * serves one data directory over NATS until SIGTERM or SIGINT, then refuses new requests, lets
 * the ones in flight (uploads and streamed replies included) finish, drains its subscriptions,
 * closes the store and drains the connection before exiting 0.
 */
import type { Command } from "commander";
import { connect, type ConnectionOptions } from "nats";
import { StrataError } from "../errors.js";
import { startServer, type StrataServer } from "../net/server/server.js";
import { DEFAULT_INBOX_PREFIX, DEFAULT_PREFIX } from "../net/wire/subjects.js";
import { addNatsFlags, exitOnSignal, natsOptions, type NatsFlags } from "./coordinator.js";

interface ServerFlags extends NatsFlags {
  id: string;
  data: string;
  prefix: string;
  tlsCa?: string;
  tlsCert?: string;
  tlsKey?: string;
  tier?: string;
  cacheBytes?: string;
  sealIntervalMs?: string;
  fsync: string;
  inboxPrefix: string;
  standalone?: boolean;
  compaction: boolean;
}

export function register(program: Command): void {
  const command = program
    .command("server")
    .description("run a persistence server: serves the streams and kv stores of one data directory over NATS")
    .requiredOption("--id <name>", "server id (1..64 of [-_a-zA-Z0-9]); names its subjects and its data in the tier")
    .requiredOption("--data <dir>", "data directory (segments and index)")
    .option("--prefix <prefix>", "subject prefix", DEFAULT_PREFIX)
    .option("--tls-ca <file>", "CA certificate to verify nats-server with")
    .option("--tls-cert <file>", "client certificate for nats-server (with --tls-key)")
    .option("--tls-key <file>", "client key for nats-server (with --tls-cert)")
    .option("--tier <uri>", "cold tier: dir:/path or s3://bucket/prefix?endpoint=URL")
    .option("--cache-bytes <n>", "local byte budget for segments already in the tier")
    .option("--seal-interval-ms <n>", "seal and ship a dirty segment at least this often (default 1000)")
    .option("--fsync <mode>", "always: ack after fdatasync; interval: ack after write, fdatasync every second", "always")
    .option("--inbox-prefix <prefix>", "answer only reply subjects below this prefix (your clients' inboxPrefix)", DEFAULT_INBOX_PREFIX)
    .option("--standalone", "serve every location asked for, with no coordinator, lease or failover (one server alone, clients pinned to it)")
    .option("--no-compaction", "do not compact in the background (strata compact --server still does)");
  addNatsFlags(command).action(async (flags: ServerFlags) => {
    const options = withTls(natsOptions(flags, `strata-server-${flags.id}`), flags);
    const storeOptions = {
      ...(flags.tier !== undefined ? { tier: flags.tier } : {}),
      ...(flags.cacheBytes !== undefined ? { cacheBytes: positiveInt(flags.cacheBytes, "--cache-bytes") } : {}),
      ...(flags.sealIntervalMs !== undefined ? { sealIntervalMs: positiveInt(flags.sealIntervalMs, "--seal-interval-ms") } : {}),
      fsync: fsyncMode(flags.fsync),
      compaction: flags.compaction,
      onWarning: (m: string) => log(`warning: ${m}`),
    };
    let nc;
    try {
      nc = await connect(options);
    } catch (err) {
      throw new StrataError("UNAVAILABLE", `cannot connect to NATS at ${flags.nats}: ${(err as Error).message}`, { cause: err });
    }
    let server: StrataServer;
    try {
      server = await startServer({
        id: flags.id,
        prefix: flags.prefix,
        inboxPrefix: flags.inboxPrefix,
        dir: flags.data,
        storeOptions,
        nats: nc,
        standalone: flags.standalone === true,
        onWarning: (m) => log(`warning: ${m}`),
      });
    } catch (err) {
      await nc.close();
      throw err;
    }
    log(`server "${flags.id}" ready on ${flags.prefix}.{w,r}.${flags.id}.> via ${nc.getServer()}, data in ${flags.data}`);
    void nc.closed().then((err) => {
      if (err) {
        log(`NATS connection closed: ${err.message}`);
        process.exit(1);
      }
    });
    exitOnSignal("strata server", async () => {
      await server.stop();
      await nc.drain();
    });
  });
}

function fsyncMode(value: string): "always" | "interval" {
  if (value !== "always" && value !== "interval") throw new StrataError("INVALID_ARGUMENT", `--fsync must be "always" or "interval", got "${value}"`);
  return value;
}

function withTls(options: ConnectionOptions, flags: ServerFlags): ConnectionOptions {
  if ((flags.tlsCert === undefined) !== (flags.tlsKey === undefined)) {
    throw new StrataError("INVALID_ARGUMENT", "--tls-cert and --tls-key go together");
  }
  if (flags.tlsCa === undefined && flags.tlsCert === undefined) return options;
  return {
    ...options,
    tls: {
      ...(flags.tlsCa !== undefined ? { caFile: flags.tlsCa } : {}),
      ...(flags.tlsCert !== undefined ? { certFile: flags.tlsCert, keyFile: flags.tlsKey! } : {}),
    },
  };
}

function positiveInt(text: string, flag: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n <= 0) throw new StrataError("INVALID_ARGUMENT", `${flag} must be a positive integer, got "${text}"`);
  return n;
}

function log(line: string): void {
  process.stdout.write(`${new Date().toISOString()} strata server: ${line}\n`);
}

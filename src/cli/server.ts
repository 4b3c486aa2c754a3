/**
 * `strata server --id NAME --data DIR --nats URL [--prefix strata] [--creds FILE | --nkey FILE | --user U --pass P]
 *  [--tls-ca FILE --tls-cert FILE --tls-key FILE] [--tier dir:/path | --tier s3://…] [--cache-bytes N]
 *  [--seal-interval-ms N] [--fsync always|interval] [--inbox-prefix _INBOX] [--standalone] [--no-compaction]`:
 * serves one data directory over NATS until SIGTERM or SIGINT, then refuses new requests, lets
 * the ones in flight (uploads and streamed replies included) finish, drains its subscriptions,
 * closes the store and drains the connection before exiting 0.
 */
import type { Command } from "commander";
import { StrataError } from "../errors.js";
import { startServer, type StrataServer } from "../net/server/server.js";
import { DEFAULT_INBOX_PREFIX, DEFAULT_PREFIX } from "../net/wire/subjects.js";
import { exitOnSignal } from "./coordinator.js";
import { cliLogger, type LogFlags } from "./config-sources.js";
import { addNatsFlags, connectNats, natsOptions, type NatsFlags } from "./nats-flags.js";
import { addMetricsFlags, startMetricsFromFlags, type MetricsFlags } from "./metrics-flags.js";
import { watchNats } from "../metrics/nats-watch.js";
import { serverReadiness, type ServerLive } from "../metrics/readiness.js";

interface ServerFlags extends NatsFlags, LogFlags, MetricsFlags {
  id: string;
  data: string;
  prefix: string;
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
    .option("--tier <uri>", "cold tier: dir:/path or s3://bucket/prefix?endpoint=URL")
    .option("--cache-bytes <n>", "local byte budget for segments already in the tier")
    .option("--seal-interval-ms <n>", "seal and ship a dirty segment at least this often (default 1000)")
    .option("--fsync <mode>", "always: ack after fdatasync; interval: ack after write, fdatasync every second", "always")
    .option("--inbox-prefix <prefix>", "answer only reply subjects below this prefix (your clients' inboxPrefix)", DEFAULT_INBOX_PREFIX)
    .option("--standalone", "serve every location asked for, with no coordinator, lease or failover (one server alone, clients pinned to it)")
    .option("--no-compaction", "do not compact in the background (strata compact --server still does)");
  addNatsFlags(addMetricsFlags(command)).action(async (flags: ServerFlags) => {
    const logger = cliLogger(flags, { server: flags.id });
    const options = natsOptions(flags, `strata-server-${flags.id}`);
    const storeOptions = {
      ...(flags.tier !== undefined ? { tier: flags.tier } : {}),
      ...(flags.cacheBytes !== undefined ? { cacheBytes: positiveInt(flags.cacheBytes, "--cache-bytes") } : {}),
      ...(flags.sealIntervalMs !== undefined ? { sealIntervalMs: positiveInt(flags.sealIntervalMs, "--seal-interval-ms") } : {}),
      fsync: fsyncMode(flags.fsync),
      compaction: flags.compaction,
    };
    // /readyz: recovered (the server started), connected to NATS, and under a coordinator holding its lease.
    const live: ServerLive = {};
    const { metrics, endpoint } = await startMetricsFromFlags(flags, serverReadiness(live, flags.standalone !== true));
    if (endpoint) logger.info({ event: "metrics_listening", url: endpoint.url, port: endpoint.port }, `metrics on ${endpoint.url}/metrics (/healthz, /readyz), port ${endpoint.port}`);
    const nc = await connectNats(flags, `strata-server-${flags.id}`, options);
    live.nats = watchNats(nc);
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
        logger,
        ...(metrics ? { metrics } : {}),
      });
    } catch (err) {
      await nc.close();
      throw err;
    }
    live.server = server;
    void nc.closed().then((err) => {
      if (err) {
        logger.error({ event: "nats_closed", error: err.message }, `NATS connection closed: ${err.message}`);
        process.exit(1);
      }
    });
    exitOnSignal(
      "strata server",
      async () => {
        await server.stop();
        await nc.drain();
        live.nats?.stop();
        await endpoint?.close();
      },
      logger,
    );
    // Logged once the signal handlers are in place: whoever waits for it may stop us at once.
    logger.info(
      { event: "server_ready", prefix: flags.prefix, nats: nc.getServer(), data: flags.data, standalone: flags.standalone === true },
      `server "${flags.id}" ready on ${flags.prefix}.{w,r}.${flags.id}.> via ${nc.getServer()}, data in ${flags.data}`,
    );
  });
}

function fsyncMode(value: string): "always" | "interval" {
  if (value !== "always" && value !== "interval") throw new StrataError("INVALID_ARGUMENT", `--fsync must be "always" or "interval", got "${value}"`);
  return value;
}

function positiveInt(text: string, flag: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n <= 0) throw new StrataError("INVALID_ARGUMENT", `${flag} must be a positive integer, got "${text}"`);
  return n;
}


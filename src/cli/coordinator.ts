/**
 * `strata coordinator --data DIR --nats URL [--lease-ms N] [--prefix P] [--user U --pass P | --creds FILE | --nkey FILE] [--tls-*]`:
 * runs the coordinator until SIGTERM or SIGINT, then stops answering, lets in-flight requests
 * finish, closes its LMDB state and drains the NATS connection before exiting 0.
 *
 * Also exports graceful shutdown on signals, which `strata server` and `strata up` reuse (the NATS
 * flags live in ./nats-flags.ts).
 */
import type { Command } from "commander";
import { StrataError } from "../errors.js";
import type { Logger } from "../logger.js";
import { startCoordinator, type Coordinator } from "../net/coord/coordinator.js";
import { DEFAULT_PREFIX } from "../net/wire/coordinator-protocol.js";
import { DEFAULT_INBOX_PREFIX } from "../net/wire/subjects.js";
import { cliLogger, type LogFlags } from "./config-sources.js";
import { addNatsFlags, connectNats, type NatsFlags } from "./nats-flags.js";
import { addMetricsFlags, startMetricsFromFlags, type MetricsFlags } from "./metrics-flags.js";
import { watchNats } from "../metrics/nats-watch.js";
import { coordinatorReadiness, type CoordinatorLive } from "../metrics/readiness.js";

interface CoordinatorFlags extends NatsFlags, LogFlags, MetricsFlags {
  data: string;
  prefix: string;
  leaseMs?: string;
  leaseRenewMs?: string;
  leaseMarginMs?: string;
  inboxPrefix: string;
}

/**
 * Calls `shutdown` once on the first SIGTERM or SIGINT, then exits 0 (1 if shutdown failed).
 * A second signal while shutting down exits at once, for an operator who does not want to wait.
 * With a logger, each step is a log event (`shutdown_started`, `stopped`, `shutdown_failed`);
 * without one, a line on stderr.
 */
export function exitOnSignal(what: string, shutdown: () => Promise<void>, logger?: Logger): void {
  let stopping = false;
  const say = (level: "info" | "error", fields: { event: string } & Record<string, unknown>, message: string): void => {
    if (logger) logger[level](fields, message);
    else process.stderr.write(`${what}: ${message}\n`);
  };
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) {
      say("error", { event: "shutdown_forced", signal }, `${signal} again, exiting without waiting`);
      process.exit(1);
    }
    stopping = true;
    say("info", { event: "shutdown_started", signal }, `${signal}, shutting down`);
    shutdown().then(
      () => {
        say("info", { event: "stopped" }, "stopped");
        process.exit(0);
      },
      (err: unknown) => {
        say("error", { event: "shutdown_failed", error: (err as Error)?.message ?? String(err), stack: (err as Error)?.stack }, `shutdown failed: ${(err as Error)?.stack ?? String(err)}`);
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
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
  addNatsFlags(addMetricsFlags(command)).action(async (flags: CoordinatorFlags) => {
    const logger = cliLogger(flags, { component: "coordinator" });
    const limits = {
      ...msFlag(flags.leaseMs, "--lease-ms", "leaseMs"),
      ...msFlag(flags.leaseRenewMs, "--lease-renew-ms", "leaseRenewMs"),
      ...msFlag(flags.leaseMarginMs, "--lease-margin-ms", "leaseMarginMs"),
    };
    // /readyz: the coordinator's state is open and it is connected to NATS.
    const live: CoordinatorLive = {};
    const { metrics, endpoint } = await startMetricsFromFlags(flags, coordinatorReadiness(live));
    if (endpoint) logger.info({ event: "metrics_listening", url: endpoint.url, port: endpoint.port }, `metrics on ${endpoint.url}/metrics (/healthz, /readyz), port ${endpoint.port}`);
    const nc = await connectNats(flags, "strata-coordinator");
    live.nats = watchNats(nc);
    let coordinator: Coordinator;
    try {
      coordinator = await startCoordinator({
        nc,
        dataDir: flags.data,
        prefix: flags.prefix,
        inboxPrefix: flags.inboxPrefix,
        limits,
        logger,
        ...(metrics ? { metrics } : {}),
      });
    } catch (err) {
      await nc.close();
      throw err;
    }
    live.coordinator = coordinator;
    const l = coordinator.limits;
    void nc.closed().then((err) => {
      // Closed by anything but our own shutdown (e.g. the server refused the credentials).
      if (err) {
        logger.error({ event: "nats_closed", error: err.message }, `NATS connection closed: ${err.message}`);
        process.exit(1);
      }
    });
    exitOnSignal(
      "strata coordinator",
      async () => {
        await coordinator.stop();
        await nc.drain();
        live.nats?.stop();
        await endpoint?.close();
      },
      logger,
    );
    // Logged once the signal handlers are in place: whoever waits for it may stop us at once.
    logger.info(
      { event: "coordinator_ready", prefix: flags.prefix, nats: nc.getServer(), data: flags.data, leaseMs: l.leaseMs, leaseRenewMs: l.leaseRenewMs, leaseMarginMs: l.leaseMarginMs },
      `coordinator ready on ${flags.prefix}.coord.* via ${nc.getServer()}, state in ${flags.data}, lease ${l.leaseMs} ms (renew ${l.leaseRenewMs}, margin ${l.leaseMarginMs})`,
    );
  });
}

/** A positive integer flag as a limit, or nothing when absent; anything else is refused. */
export function msFlag(value: string | undefined, flag: string, name: string): Record<string, number> {
  if (value === undefined) return {};
  const n = Number(value);
  if (!/^[0-9]+$/.test(value) || !Number.isSafeInteger(n) || n <= 0) throw new StrataError("INVALID_ARGUMENT", `${flag} must be a positive integer (ms), got ${JSON.stringify(value)}`);
  return { [name]: n };
}


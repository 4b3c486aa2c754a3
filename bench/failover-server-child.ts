/**
 * A persistence server for the failover benchmark (bench/failover.ts): what `strata server` runs,
 * started by the failover harness (src/testing/cluster.ts, `serverScript`) with the same
 * arguments (`server --id ID --data DIR --nats URL --prefix P --tier dir:… [--seal-interval-ms N]`),
 * plus an IPC channel on which it answers { type: "stats" } with { type: "stats", stats } (the
 * server's `stats()`, takeover bytes included), so the benchmark can count what a takeover read
 * from the object store without adding anything to the wire. It logs as the CLI does (JSON lines
 * on stdout, its store's events included, `server "<id>" ready` among them), and stops gracefully
 * on SIGTERM; the benchmark kills it with SIGKILL by its PID.
 */
import { createLogger } from "../src/logger.js";
import { startServer } from "../src/net/server/server.js";
import { answerStats, serverChildArgs, serverChildOptions, stopOnSigterm } from "../src/testing/server-child.js";

const USAGE = "failover-server-child.ts server --id ID --data DIR --nats URL --tier dir:PATH [--prefix P] [--seal-interval-ms N]";
const args = serverChildArgs(USAGE);
if (args.tier === undefined) {
  process.stderr.write(`usage: ${USAGE}\n`);
  process.exit(2);
}

// The server hands its logger to the store it opens (storeOptions names none).
const logger = createLogger({ base: { server: args.id } });
const server = await startServer({
  ...serverChildOptions(args),
  storeOptions: { tier: args.tier, ...(args.sealIntervalMs !== undefined ? { sealIntervalMs: args.sealIntervalMs } : {}) },
  logger,
});
logger.info({ event: "server_ready", bench: true }, `server "${args.id}" ready (bench child, pid ${process.pid})`);

answerStats(server);
stopOnSigterm(server);

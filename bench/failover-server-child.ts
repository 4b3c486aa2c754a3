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
import { parseArgs } from "node:util";
import { createLogger } from "../src/logger.js";
import { startServer } from "../src/net/server/server.js";

const { values, positionals } = parseArgs({
  args: process.argv.slice(2),
  allowPositionals: true,
  strict: true,
  options: {
    id: { type: "string" },
    data: { type: "string" },
    nats: { type: "string" },
    prefix: { type: "string" },
    tier: { type: "string" },
    "seal-interval-ms": { type: "string" },
  },
});
if (positionals[0] !== "server" || values.id === undefined || values.data === undefined || values.nats === undefined || values.tier === undefined) {
  process.stderr.write(`usage: failover-server-child.ts server --id ID --data DIR --nats URL --tier dir:PATH [--prefix P] [--seal-interval-ms N]\n`);
  process.exit(2);
}
const sealIntervalMs = values["seal-interval-ms"] === undefined ? undefined : Number(values["seal-interval-ms"]);

// The server hands its logger to the store it opens (storeOptions names none).
const logger = createLogger({ base: { server: values.id } });
const server = await startServer({
  id: values.id,
  dir: values.data,
  nats: values.nats.split(","),
  natsOptions: { name: `strata-server-${values.id}`, maxReconnectAttempts: -1 },
  ...(values.prefix !== undefined ? { prefix: values.prefix } : {}),
  storeOptions: { tier: values.tier, ...(sealIntervalMs !== undefined ? { sealIntervalMs } : {}) },
  logger,
});
logger.info({ event: "server_ready", bench: true }, `server "${values.id}" ready (bench child, pid ${process.pid})`);

process.on("message", (msg: { type?: string }) => {
  if (msg?.type === "stats") process.send?.({ type: "stats", stats: server.stats() });
});
process.once("SIGTERM", () => {
  server.stop().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`stop failed: ${String(err)}\n`);
      process.exit(1);
    },
  );
});

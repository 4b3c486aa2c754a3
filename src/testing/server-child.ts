/**
 * What the strata server child processes of tests and benchmarks share
 * (test/net/held-server-child.ts, bench/failover-server-child.ts, test/net/server-child-main.ts):
 * the arguments the failover harness gives `strata server` (./cluster.ts `serverScript`:
 * `server --id ID --data DIR --nats URL[,URL] [--prefix P] [--tier URI] [--seal-interval-ms N]`,
 * plus a child's own boolean flags), the server options they stand for, the `stats` IPC answer,
 * and the graceful stop on SIGTERM (exit 0, or 1 with the reason on stderr).
 */
import { parseArgs } from "node:util";
import type { ServerOptions, StrataServer } from "../net/server/server.js";

export interface ServerChildArgs {
  id: string;
  data: string;
  nats: string;
  prefix?: string;
  tier?: string;
  sealIntervalMs?: number;
  /** The child's own boolean flags, by name (absent: false). */
  flags: Record<string, boolean>;
}

/** Parses argv as the harness passes it; exits 2 with `usage` when it is not a `server` line with --id, --data and --nats. */
export function serverChildArgs(usage: string, booleans: readonly string[] = []): ServerChildArgs {
  const options: Record<string, { type: "string" | "boolean" }> = {
    id: { type: "string" },
    data: { type: "string" },
    nats: { type: "string" },
    prefix: { type: "string" },
    tier: { type: "string" },
    "seal-interval-ms": { type: "string" },
  };
  for (const b of booleans) options[b] = { type: "boolean" };
  const { values, positionals } = parseArgs({ args: process.argv.slice(2), allowPositionals: true, strict: true, options });
  const str = (name: string) => (typeof values[name] === "string" ? (values[name] as string) : undefined);
  const id = str("id");
  const data = str("data");
  const nats = str("nats");
  if (positionals[0] !== "server" || id === undefined || data === undefined || nats === undefined) {
    process.stderr.write(`usage: ${usage}\n`);
    process.exit(2);
  }
  const args: ServerChildArgs = { id, data, nats, flags: Object.fromEntries(booleans.map((b) => [b, values[b] === true])) };
  const prefix = str("prefix");
  const tier = str("tier");
  const seal = str("seal-interval-ms");
  if (prefix !== undefined) args.prefix = prefix;
  if (tier !== undefined) args.tier = tier;
  if (seal !== undefined) args.sealIntervalMs = Number(seal);
  return args;
}

/** The startServer options the harness's arguments stand for (as `strata server` uses them); the caller adds the store's. */
export function serverChildOptions(args: ServerChildArgs): Pick<ServerOptions, "id" | "dir" | "nats" | "natsOptions" | "prefix"> {
  return {
    id: args.id,
    dir: args.data,
    nats: args.nats.split(","),
    natsOptions: { name: `strata-server-${args.id}`, maxReconnectAttempts: -1 },
    ...(args.prefix !== undefined ? { prefix: args.prefix } : {}),
  };
}

/** Answers IPC `{ type: "stats" }` with `{ type: "stats", stats }` (the server's counters). */
export function answerStats(server: StrataServer): void {
  process.on("message", (msg: { type?: string }) => {
    if (msg?.type === "stats") process.send?.({ type: "stats", stats: server.stats() });
  });
}

/** On SIGTERM: stops the server gracefully, then exits 0 (1, with the reason on stderr, if the stop failed). */
export function stopOnSigterm(server: { stop(): Promise<void> }): void {
  process.once("SIGTERM", () => {
    server.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`stop failed: ${String(err)}\n`);
        process.exit(1);
      },
    );
  });
}

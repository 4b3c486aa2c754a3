/**
 * `strata http --port N --nats URL [--host 127.0.0.1] [--tokens FILE | --no-auth] [--prefix strata]
 *  [--server ID] [--timeout-ms N] [--body-bytes-max N] [--body-buffer-bytes-max N] [--body-inflight-bytes-max N]
 *  [--header-bytes-max N] [--streams-max N] [NATS auth/TLS flags]`:
 * runs the HTTP gateway (src/http/) beside a deployment, talking to it as a StrataClient, until
 * SIGTERM or SIGINT; then it stops listening, closes its connections and drains NATS.
 *
 * Safe default: without --tokens the gateway refuses to start unless --no-auth is given, and it
 * binds 127.0.0.1 unless --host says otherwise (a warning is logged for --no-auth on a
 * non-loopback address).
 */
import type { Command } from "commander";
import { connect } from "nats";
import { StrataError } from "../errors.js";
import { TokenTable } from "../http/auth.js";
import { DEFAULT_HTTP_HOST, startGateway } from "../http/gateway.js";
import type { HttpLimits } from "../http/http-limits.js";
import { DEFAULT_HTTP_LIMITS } from "../http/http-limits.js";
import { StrataClient } from "../net/client/client.js";
import { DEFAULT_PREFIX } from "../net/wire/subjects.js";
import { cliLogger, type LogFlags } from "./config-sources.js";
import { exitOnSignal } from "./coordinator.js";
import { addNatsFlags, natsOptions, type NatsFlags } from "./nats-flags.js";

interface HttpFlags extends NatsFlags, LogFlags {
  port: string;
  host: string;
  tokens?: string;
  auth: boolean;
  prefix: string;
  server?: string;
  timeoutMs?: string;
  bodyBytesMax: string;
  bodyBufferBytesMax: string;
  bodyInflightBytesMax: string;
  headerBytesMax: string;
  streamsMax: string;
  downloadsMax: string;
  connectionsMax: string;
}

export function register(program: Command): void {
  const command = program
    .command("http")
    .description("run the HTTP gateway: a REST face (kv, streams, SSE watch) of a Strata deployment, with bearer tokens per location prefix")
    .requiredOption("--port <n>", "TCP port to listen on (0: any free port)")
    .option("--host <address>", "address to bind", DEFAULT_HTTP_HOST)
    .option("--tokens <file>", "bearer tokens (JSON or YAML): [{ name, token, grants: [{ prefix, rights: read|readwrite }] }]")
    .option("--no-auth", "serve without tokens: anyone who reaches the port may read and write every location")
    .option("--prefix <prefix>", "subject prefix of the deployment", DEFAULT_PREFIX)
    .option("--server <id>", "send every location to this server (a standalone server) instead of asking the coordinator")
    .option("--timeout-ms <n>", "budget of one call to the deployment, retries included (default 10000)")
    .option("--body-bytes-max <n>", "largest request body; larger → 413", String(DEFAULT_HTTP_LIMITS.httpBodyBytesMax))
    .option("--body-buffer-bytes-max <n>", "bodies with a Content-Length above this stream through to the deployment instead of being held", String(DEFAULT_HTTP_LIMITS.httpBodyBufferBytesMax))
    .option("--body-inflight-bytes-max <n>", "request bodies held at once; past it → 503", String(DEFAULT_HTTP_LIMITS.httpBodyInflightBytesMax))
    .option("--header-bytes-max <n>", "largest request head; larger → 431", String(DEFAULT_HTTP_LIMITS.httpHeaderBytesMax))
    .option("--streams-max <n>", "NDJSON listings and SSE watches open at once; past it → 503", String(DEFAULT_HTTP_LIMITS.httpStreamsMax))
    .option("--downloads-max <n>", "GETs of values larger than one NATS message being sent at once (each holds about one reply window); past it → 503", String(DEFAULT_HTTP_LIMITS.httpDownloadsMax))
    .option("--connections-max <n>", "TCP connections open at once (>= streams-max + downloads-max); past it a new one is closed", String(DEFAULT_HTTP_LIMITS.httpConnectionsMax));
  addNatsFlags(command).action(async (flags: HttpFlags) => {
    const logger = cliLogger(flags, { component: "http" });
    const port = integer(flags.port, "--port", 0);
    if (port > 65535) throw new StrataError("INVALID_ARGUMENT", `--port must be 0..65535, got ${flags.port}`);
    if (flags.tokens !== undefined && !flags.auth) throw new StrataError("INVALID_ARGUMENT", "give --tokens or --no-auth, not both");
    const tokens = flags.tokens === undefined ? undefined : TokenTable.load(flags.tokens);
    if (tokens === undefined && flags.auth) {
      throw new StrataError("INVALID_ARGUMENT", "the gateway needs --tokens FILE (bearer tokens with their location grants), or --no-auth to serve every location to anyone who can reach it");
    }
    const limits: Partial<HttpLimits> = {
      httpBodyBytesMax: integer(flags.bodyBytesMax, "--body-bytes-max", 1),
      httpBodyBufferBytesMax: integer(flags.bodyBufferBytesMax, "--body-buffer-bytes-max", 1),
      httpBodyInflightBytesMax: integer(flags.bodyInflightBytesMax, "--body-inflight-bytes-max", 1),
      httpHeaderBytesMax: integer(flags.headerBytesMax, "--header-bytes-max", 1),
      httpStreamsMax: integer(flags.streamsMax, "--streams-max", 1),
      httpDownloadsMax: integer(flags.downloadsMax, "--downloads-max", 1),
      httpConnectionsMax: integer(flags.connectionsMax, "--connections-max", 1),
    };
    let nc;
    try {
      nc = await connect(natsOptions(flags, "strata-http"));
    } catch (err) {
      throw new StrataError("UNAVAILABLE", `cannot connect to NATS at ${flags.nats}: ${(err as Error).message}`, { cause: err });
    }
    const client = new StrataClient(nc, {
      prefix: flags.prefix,
      ...(flags.server !== undefined ? { server: flags.server } : {}),
      ...(flags.timeoutMs !== undefined ? { timeoutMs: integer(flags.timeoutMs, "--timeout-ms", 1) } : {}),
      ...(flags.natsInboxPrefix !== undefined ? { inboxPrefix: flags.natsInboxPrefix } : {}),
    });
    let gateway;
    try {
      gateway = await startGateway({ client, host: flags.host, port, limits, logger, ...(tokens !== undefined ? { tokens } : { noAuth: true }) });
    } catch (err) {
      client.close();
      await nc.close();
      throw err;
    }
    if (tokens === undefined && !isLoopback(gateway.host)) {
      logger.warn({ event: "http_no_auth_exposed", host: gateway.host }, "serving without authentication on a non-loopback address: anyone who reaches it may read and write every location");
    }
    void nc.closed().then((err) => {
      if (err) {
        logger.error({ event: "nats_closed", error: err.message }, "NATS connection closed");
        process.exit(1);
      }
    });
    exitOnSignal(
      "strata http",
      async () => {
        await gateway.close();
        client.close();
        await nc.drain();
      },
      logger,
    );
    // Logged once the signal handlers are in place: whoever waits for it may stop us at once.
    logger.info({ event: "http_ready", url: gateway.url, tokens: tokens?.size ?? 0, nats: nc.getServer(), prefix: flags.prefix }, `HTTP gateway ready on ${gateway.url}`);
  });
}

function integer(text: string, flag: string, min: number): number {
  const n = Number(text);
  if (!/^[0-9]{1,16}$/.test(text) || !Number.isSafeInteger(n) || n < min) throw new StrataError("INVALID_ARGUMENT", `${flag} must be an integer >= ${min}, got ${JSON.stringify(text)}`);
  return n;
}

function isLoopback(host: string): boolean {
  return host === "::1" || host.startsWith("127.");
}

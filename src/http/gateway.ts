/**
 * Runs the gateway: the Hono app (app.ts) on a Node HTTP server bound to one address.
 *
 *   const gw = await startGateway({ client, host: "127.0.0.1", port: 0, tokens });
 *   gw.url;            // "http://127.0.0.1:34567"
 *   await gw.close();  // stops accepting, ends SSE watches, lets requests finish (cut after httpShutdownGraceMs)
 *
 * Invariants: the connections open at once (`httpConnectionsMax`), the server's head size (`httpHeaderBytesMax`, Node's maxHeaderSize → 431) and request
 * receive time (`httpRequestReceiveMs` → 408, enforced at most a tenth of it late) are bounded; the gateway never closes the client it
 * was given (the caller owns it and its NATS connection). Without a token table the caller must
 * have asked for no authentication explicitly (`noAuth: true`); startGateway refuses otherwise.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { getRequestListener } from "@hono/node-server";
import { StrataError } from "../errors.js";
import { silentLogger, type Logger } from "../logger.js";
import type { StrataClient } from "../net/client/client.js";
import { createGatewayApp, type GatewayStats } from "./app.js";
import type { TokenTable } from "./auth.js";
import { resolveHttpLimits, type HttpLimits } from "./http-limits.js";

export interface GatewayOptions {
  client: StrataClient;
  host?: string;
  port: number;
  tokens?: TokenTable;
  /** Serve without authentication; required when no tokens are given. */
  noAuth?: boolean;
  limits?: Partial<HttpLimits>;
  logger?: Logger;
}

export interface Gateway {
  url: string;
  port: number;
  host: string;
  limits: HttpLimits;
  stats(): GatewayStats;
  close(): Promise<void>;
}

export const DEFAULT_HTTP_HOST = "127.0.0.1";

export async function startGateway(options: GatewayOptions): Promise<Gateway> {
  if (options.tokens === undefined && options.noAuth !== true) {
    throw new StrataError("INVALID_ARGUMENT", "the gateway needs --tokens FILE (bearer tokens with their location grants), or --no-auth to serve every location to anyone who can reach it");
  }
  if (options.tokens !== undefined && options.noAuth === true) throw new StrataError("INVALID_ARGUMENT", "give --tokens or --no-auth, not both");
  const limits = resolveHttpLimits(options.limits);
  const logger = options.logger ?? silentLogger;
  const { app, stats, endWatches } = createGatewayApp({ client: options.client, tokens: options.tokens, limits, logger });
  const listener = getRequestListener(app.fetch, { overrideGlobalObjects: false });
  // Node checks the request timeout only every connectionsCheckingInterval (30 s by default): a
  // slow sender would keep its connection, and a held body its reservation, up to 30 s past
  // httpRequestReceiveMs. Checked ten times per period, it is enforced at most a tenth late.
  const connectionsCheckingInterval = Math.max(25, Math.min(30_000, Math.floor(limits.httpRequestReceiveMs / 10)));
  const server: Server = createServer({ maxHeaderSize: limits.httpHeaderBytesMax, requestTimeout: limits.httpRequestReceiveMs, connectionsCheckingInterval }, listener);
  // Past it Node closes a new connection at once: idle sockets cannot pile up without bound.
  server.maxConnections = limits.httpConnectionsMax;
  const host = options.host ?? DEFAULT_HTTP_HOST;
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) => reject(new StrataError("UNAVAILABLE", `the gateway cannot listen on ${host}:${options.port}: ${err.message}`, { cause: err })));
    server.listen(options.port, host, () => resolve());
  });
  const address = server.address() as AddressInfo;
  const urlHost = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return {
    url: `http://${urlHost}:${address.port}`,
    port: address.port,
    host: address.address,
    limits,
    stats,
    close: () =>
      new Promise<void>((resolve) => {
        // Stop accepting; let requests in flight finish (SSE watches never end on their own, so
        // they are ended), and cut what is still open after httpShutdownGraceMs.
        const cut = setTimeout(() => server.closeAllConnections(), limits.httpShutdownGraceMs);
        // A keep-alive connection whose last response ends after close() stays open until its
        // keepAliveTimeout; close those as they become idle.
        const idle = setInterval(() => server.closeIdleConnections(), 50);
        server.close(() => {
          clearTimeout(cut);
          clearInterval(idle);
          resolve();
        });
        endWatches();
      }),
  };
}

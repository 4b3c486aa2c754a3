/**
 * The HTTP face of a process's metrics and health: `/metrics` (Prometheus text exposition of one
 * `Metrics` registry), `/healthz` (200 while the process is up) and `/readyz` (200 when every
 * readiness check passes, else 503 with a JSON body naming the failing ones). Three routes on
 * node:http; nothing else is served (404), and only GET/HEAD (405 otherwise).
 *
 * It listens on loopback by default (`--metrics-host`); port 0 picks a free port, and the bound
 * one is on the returned endpoint. A port in use (or an address that cannot be bound) is a
 * `StrataError` that says what to do, never a crash trace.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { StrataError } from "../errors.js";
import type { Metrics } from "./metrics.js";

/** Named readiness checks: true passes. */
export type ReadinessChecks = Record<string, boolean>;

export interface MetricsEndpointOptions {
  metrics: Metrics;
  /** Port (0: a free one). */
  port: number;
  /** Address to bind, default 127.0.0.1. */
  host?: string;
  /** The readiness checks, evaluated on every /readyz. */
  ready: () => ReadinessChecks;
}

export interface MetricsEndpoint {
  readonly host: string;
  /** The port bound (the one picked when asked for 0). */
  readonly port: number;
  /** `http://host:port` */
  readonly url: string;
  close(): Promise<void>;
}

export const DEFAULT_METRICS_HOST = "127.0.0.1";

/** A `--metrics-port` value as a port number (0..65535). */
export function metricsPort(text: string, flag = "--metrics-port"): number {
  const n = Number(text);
  if (!/^[0-9]+$/.test(text) || !Number.isSafeInteger(n) || n > 65535) throw new StrataError("INVALID_ARGUMENT", `${flag} must be a port number 0..65535 (0 picks a free one), got ${JSON.stringify(text)}`);
  return n;
}

export async function startMetricsEndpoint(options: MetricsEndpointOptions): Promise<MetricsEndpoint> {
  const host = options.host ?? DEFAULT_METRICS_HOST;
  const { metrics, ready } = options;
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (req.method !== "GET" && req.method !== "HEAD") return send(res, 405, "text/plain", "only GET\n", { allow: "GET, HEAD" });
    if (path === "/healthz") return send(res, 200, "text/plain", "ok\n");
    if (path === "/readyz") {
      let checks: ReadinessChecks;
      try {
        checks = ready();
      } catch {
        checks = { checks: false }; // a check that throws fails readiness
      }
      const failing = Object.keys(checks).filter((name) => !checks[name]);
      return send(res, failing.length === 0 ? 200 : 503, "application/json", `${JSON.stringify({ ready: failing.length === 0, failing, checks })}\n`);
    }
    if (path === "/metrics") {
      metrics.text().then(
        (text) => send(res, 200, metrics.contentType, text),
        (err: unknown) => send(res, 500, "text/plain", `collecting the metrics failed: ${(err as Error)?.message ?? String(err)}\n`),
      );
      return;
    }
    send(res, 404, "text/plain", "not found: /metrics, /healthz and /readyz are served\n");
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (err: NodeJS.ErrnoException) => {
      const where = `${host}:${options.port}`;
      if (err.code === "EADDRINUSE") reject(new StrataError("UNAVAILABLE", `the metrics port ${where} is in use; pick another --metrics-port (0 picks a free one) or stop what listens there`, { cause: err }));
      else if (err.code === "EACCES") reject(new StrataError("FORBIDDEN", `may not listen on ${where} for metrics (a port below 1024 needs privileges); pick another --metrics-port`, { cause: err }));
      else reject(new StrataError("INVALID_ARGUMENT", `cannot listen on ${where} for metrics (${err.message}); check --metrics-host and --metrics-port`, { cause: err }));
    });
    server.listen(options.port, host, () => resolve());
  });
  // Errors after listening (a broken socket) must not crash the process.
  server.on("error", () => undefined);
  server.on("clientError", (_err, socket) => socket.destroy());
  const port = (server.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  return {
    host,
    port,
    url: `http://${host.includes(":") ? `[${host}]` : host}:${port}`,
    close() {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closing;
    },
  };
}

function send(res: http.ServerResponse, status: number, type: string, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { "content-type": type, "content-length": Buffer.byteLength(body), "cache-control": "no-store", ...headers });
  res.end(res.req.method === "HEAD" ? undefined : body);
}

/**
 * `--metrics-port N` and `--metrics-host H` of `strata server` and `strata coordinator`: with a
 * port, the process keeps a `Metrics` registry (process metrics included) and serves `/metrics`,
 * `/healthz` and `/readyz` on it (src/metrics/http-endpoint.ts); the caller logs the bound port
 * (0 picks a free one). Without one, nothing is recorded or served.
 */
import type { Command } from "commander";
import { DEFAULT_METRICS_HOST, metricsPort, startMetricsEndpoint, type MetricsEndpoint, type ReadinessChecks } from "../metrics/http-endpoint.js";
import type { Metrics } from "../metrics/metrics.js";

export interface MetricsFlags {
  metricsPort?: string;
  metricsHost: string;
}

export function addMetricsFlags(command: Command): Command {
  return command
    .option("--metrics-port <port>", "serve Prometheus /metrics, /healthz and /readyz on this port (0: a free one, logged); none: no metrics")
    .option("--metrics-host <host>", "address the metrics port listens on", DEFAULT_METRICS_HOST);
}

/**
 * Starts the metrics endpoint when `--metrics-port` is given (before the process is ready, so
 * /healthz answers and /readyz says what is missing while it starts). `ready` is evaluated per probe.
 */
export async function startMetricsFromFlags(flags: MetricsFlags, ready: () => ReadinessChecks): Promise<{ metrics?: Metrics; endpoint?: MetricsEndpoint }> {
  if (flags.metricsPort === undefined) return {};
  const port = metricsPort(flags.metricsPort);
  // prom-client is loaded only here: a process without metrics does not carry it (~4 MB of RSS).
  const { Metrics } = await import("../metrics/metrics.js");
  const metrics = new Metrics({ processMetrics: true });
  const endpoint = await startMetricsEndpoint({ metrics, port, host: flags.metricsHost, ready });
  return { metrics, endpoint };
}

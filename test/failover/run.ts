/**
 * What every failover scenario shares: the cluster's settings (short lease, small seal interval),
 * starting the cluster plus writers, watchers and a reader on their own connections, finishing a
 * run (stop writers, read everything back, let watchers catch up, analyse), and the assertions
 * that hold after any failover. Scenario files state only their fault and their own checks.
 */
import { expect, onTestFailed } from "vitest";
import type { StrataClient } from "../../src/net/client/client.js";
import { startCluster, type Cluster, type ClusterOptions } from "../../src/testing/cluster.js";
import { analyse, formatAnalysis, type Analysis, type KillEvent } from "../helpers/failover-verify.js";
import { FailoverWorkload, readBack, type WorkloadOptions } from "../helpers/failover-workload.js";
import { describeMissed, waitForWatchersCaughtUp, type MissedDetail, type WatchCatchUp } from "./watch-catchup.js";

/** Lease given to the coordinator (`--lease-ms`); renew and margin follow as lease/5. */
export const LEASE_MS = 2000;
export const MARGIN_MS = LEASE_MS / 5;
/** Seal interval of every server: bounds what a kill may lose at ack "local". */
export const SEAL_MS = 200;
/** The issue's target: a moved location is written again within lease + 3 s (p99). */
export const RECOVERY_P99_MS = LEASE_MS + 3000;
/** A bound on waits for recovery: lease + margin + generous room for takeover on 2 busy cores. */
export const RECOVERY_WAIT_MS = LEASE_MS + MARGIN_MS + 15_000;
/**
 * Local acks a kill may lose: those acknowledged within one seal interval (plus the upload in
 * flight, allowed a second) before the kill.
 */
export const LOCAL_LOSS_WINDOW_MS = SEAL_MS + 1000;

/**
 * Timeout of a scenario that finishes a run: its own waits, plus the watchers' catch-up, whose
 * bound grows with the takeover (./watch-catchup.ts), so that a watcher still behind fails with
 * what it missed rather than with a bare timeout.
 */
export const FAILOVER_TEST_MS = 180_000;

export const CLIENT_LIMITS = { watchResyncMs: 1000 };

export interface Run {
  cluster: Cluster;
  workload: FailoverWorkload;
  /** A client for the test's own reads and writes (not used by the workload). */
  reader: StrataClient;
  /** Stops writers, reads back, lets watchers catch up, analyses, logs a summary. */
  finish(kills?: KillEvent[]): Promise<RunAnalysis>;
}

/** An analysis, with how long watchers took to catch up and what each missed change was. */
export interface RunAnalysis extends Analysis {
  catchUp: WatchCatchUp;
  missedDetail: MissedDetail[];
}

export interface RunOptions {
  cluster?: ClusterOptions;
  workload?: Partial<Omit<WorkloadOptions, "clients" | "watchClients">>;
  /** NATS node of each writer client; watchers use the same nodes shifted by one. Default [0, 0]. */
  writerNodes?: number[];
}

export async function startRun(options: RunOptions = {}): Promise<Run> {
  const cluster = await startCluster({ servers: 3, leaseMs: LEASE_MS, sealIntervalMs: SEAL_MS, ...options.cluster });
  try {
    const nodes = options.writerNodes ?? [0, 0];
    const nodeCount = cluster.nats.length;
    const writers = await Promise.all(nodes.map((n) => cluster.client({ timeoutMs: 10_000, limits: CLIENT_LIMITS }, n % nodeCount)));
    const watchers = await Promise.all(nodes.map((n) => cluster.client({ timeoutMs: 10_000, limits: CLIENT_LIMITS }, (n + 1) % nodeCount)));
    const reader = await cluster.client({ timeoutMs: 15_000, limits: CLIENT_LIMITS }, nodeCount - 1);
    const workload = new FailoverWorkload({ clients: writers, watchClients: watchers, locations: 200, ...options.workload });
    return {
      cluster,
      workload,
      reader,
      async finish(kills = []) {
        await workload.stop();
        const { stored, unreadable } = await readBack(reader, workload.plan);
        // Waits on the event the verdict needs: every surviving change delivered (./watch-catchup.ts).
        const catchUp = await waitForWatchersCaughtUp(workload, stored, kills);
        workload.stopWatchers();
        const analysis = analyse({ ...workload.records(), stored, kills });
        const missedDetail = describeMissed(analysis, workload, stored, kills);
        const errors = workload.watchFailures();
        console.log(
          `[failover] ${expect.getState().currentTestName}: ${formatAnalysis(analysis)} catchUp: ${JSON.stringify(catchUp)}` +
            `${unreadable.length ? ` unreadable: ${JSON.stringify(unreadable.slice(0, 5))}` : ""}${errors.length ? ` watchErrors: ${JSON.stringify(errors.slice(0, 5))}` : ""}` +
            `${missedDetail.length ? ` missed: ${JSON.stringify(missedDetail)}` : ""}`,
        );
        return { ...analysis, catchUp, missedDetail };
      },
    };
  } catch (err) {
    await cluster.stop();
    throw err;
  }
}

/** Prints every process's output tail when the current test fails. Call inside a test. */
export function diagnoseOnFailure(cluster: Cluster): void {
  onTestFailed(() => {
    console.error(cluster.diagnostics());
  });
}

/**
 * What holds after every failover: every location readable, no object-acked write lost, no msgId
 * stored twice, nothing stored that the workload never sent, and watchers that saw every surviving
 * change once and in order.
 */
export function expectSafe(a: RunAnalysis): void {
  expect(a.unread, "locations that could not be read back").toEqual([]);
  expect(a.objectLost, "writes acknowledged at ack: object and lost").toEqual([]);
  expect(a.duplicates, "msgIds stored more than once").toEqual([]);
  expect(a.foreign, "stored values the workload never sent").toEqual([]);
  expect(a.watchers.outOfOrder, "watcher changes out of order").toEqual([]);
  expect(a.watchers.duplicates, "watcher changes delivered twice").toEqual([]);
  expect(
    a.missedDetail,
    `surviving changes a watcher never delivered (${a.watchers.missed.length}; watchers ${a.catchUp.caughtUp ? "caught up" : "still behind"} after ${a.catchUp.ms} ms of a ${a.catchUp.boundMs} ms bound, slowest takeover ${a.catchUp.takeoverMs} ms)`,
  ).toEqual([]);
  expect(a.acked.object).toBeGreaterThan(0);
  expect(a.acked.local).toBeGreaterThan(0);
}

/**
 * Local acks lost only where a server died (or was fenced), and only those acknowledged within
 * LOCAL_LOSS_WINDOW_MS before it. `kills` lists each fault with the locations it hit.
 */
export function expectLocalLossBounded(a: Analysis, kills: KillEvent[]): void {
  // A reply already on its way when the signal lands may arrive a little after it.
  const inFlightMs = 200;
  const outside = a.localLost.filter(
    (ack) => !kills.some((k) => k.locations.includes(ack.location) && ack.ackedAt >= k.at - LOCAL_LOSS_WINDOW_MS && ack.ackedAt <= k.at + inFlightMs),
  );
  expect(outside, "local acks lost outside the seal-interval window before a fault").toEqual([]);
}

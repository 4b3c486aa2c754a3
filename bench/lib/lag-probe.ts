/**
 * The machine's own stalls, measured beside a load: a separate, otherwise idle node process (the
 * `lagProbe` role of ../net-server-child.ts) runs a timer every `tickMs` while a window is open
 * and says how late its timers fired. On a shared VM the host can take a vCPU away for tens of
 * milliseconds; every process of the run then stalls alike, and a p99.9 measured from due times
 * (the paced loads) cannot be lower than such a stall. The net bench opens a window around each
 * paced load, so the report shows that floor beside the figure it bounds, from the same moments.
 * Only the probe process started here is ever signalled, by its PID.
 */
import { startBenchServer, type BenchServer, type LagProbeWindow } from "../net-server-child.js";

/** How often the probe's timer is due: about the paced 4 KiB load's send interval (3.3 ms) or finer. */
export const LAG_PROBE_TICK_MS = 2;

/** How late the probe's timers fired in one window, in ms. */
export interface ProbeLag {
  /** Timer ticks in the window. */
  ticks: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
}

export class LagProbe {
  private constructor(private readonly child: BenchServer) {}

  static async start(tickMs = LAG_PROBE_TICK_MS): Promise<LagProbe> {
    return new LagProbe(await startBenchServer({ role: "lagProbe", tickMs }));
  }

  get pid(): number {
    return this.child.pid;
  }

  /** Runs `fn` with the probe's window open; returns its value and how late the probe's timers were meanwhile. */
  async during<T>(fn: () => Promise<T>): Promise<{ value: T; lag: ProbeLag }> {
    const end = () => this.child.ask<LagProbeWindow>({ type: "end" }, "lag");
    await this.child.ask({ type: "begin" }, "begun");
    let value: T;
    try {
      value = await fn();
    } catch (err) {
      await end();
      throw err;
    }
    const { type: _type, ...lag } = await end();
    return { value, lag };
  }

  stop(): Promise<void> {
    return this.child.stop();
  }
}

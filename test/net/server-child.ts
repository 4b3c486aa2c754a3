/**
 * Test-side handle of a strata server running in a child process (test/net/server-child-main.ts):
 * start it, ask it for its stats and RSS, stop it gracefully, or kill it with SIGKILL by its PID.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { ServerStats } from "../../src/net/server/server.js";
import type { NetLimits } from "../../src/net/wire/net-limits.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

export interface ChildStats {
  stats: ServerStats;
  rss: number;
  retained: number;
}

export interface ChildServer {
  readonly pid: number;
  /** The server's counters, its RSS, and the bytes it retains (heap + buffers after a full GC). */
  stats(): Promise<ChildStats>;
  /** SIGTERM and wait for a clean exit. */
  stop(): Promise<number | null>;
  /** SIGKILL (no shutdown at all) and wait for the exit. */
  kill(): Promise<void>;
}

export async function startChildServer(settings: { dir: string; url: string; id: string; limits?: Partial<NetLimits> }): Promise<ChildServer> {
  const child: ChildProcess = spawn(process.execPath, ["--expose-gc", "--import", "tsx", "test/net/server-child-main.ts"], {
    cwd: ROOT,
    env: { ...process.env, STRATA_CHILD: JSON.stringify(settings) },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    const onMessage = (msg: { type?: string }) => {
      if (msg?.type !== "ready") return;
      child.off("message", onMessage);
      resolve();
    };
    child.on("message", onMessage);
    void exited.then((code) => reject(new Error(`server child exited (${code}) before it was ready`)));
  });
  const pid = child.pid!;
  return {
    pid,
    stats() {
      return new Promise((resolve) => {
        const onMessage = (msg: { type?: string } & ChildStats) => {
          if (msg?.type !== "stats") return;
          child.off("message", onMessage);
          resolve({ stats: msg.stats, rss: msg.rss, retained: msg.retained });
        };
        child.on("message", onMessage);
        child.send({ type: "stats" });
      });
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) process.kill(pid, "SIGTERM");
      return exited;
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) process.kill(pid, "SIGKILL");
      await exited;
    },
  };
}

/**
 * A strata server in its own process, for tests that measure its memory or kill it (SIGKILL).
 * Started by test/net/server-child.ts as `node --import tsx test/net/server-child-main.ts` with the
 * settings in the STRATA_CHILD environment variable (JSON: { dir, url, id, limits? }).
 *
 * Over IPC it sends { type: "ready", pid } once serving, and answers { type: "stats" } with
 * { type: "stats", stats, rss, retained }: `retained` is heap + ArrayBuffer bytes measured right
 * after a full GC (the child runs with --expose-gc), i.e. what the server really holds, without
 * the garbage that happens not to be collected yet. SIGTERM stops it gracefully (exit code 0).
 */
import { startServer } from "../../src/net/server/server.js";
import type { NetLimits } from "../../src/net/wire/net-limits.js";
import { stopOnSigterm } from "../../src/testing/server-child.js";

interface Settings {
  dir: string;
  url: string;
  id: string;
  limits?: Partial<NetLimits>;
}

const settings = JSON.parse(process.env.STRATA_CHILD ?? "{}") as Settings;
const server = await startServer({ standalone: true, dir: settings.dir, nats: settings.url, id: settings.id, ...(settings.limits ? { limits: settings.limits } : {}) });

process.on("message", async (msg: { type?: string }) => {
  if (msg?.type !== "stats") return;
  // Two full collections with a turn in between: V8 frees ArrayBuffer memory after a GC on a
  // background thread, so one gc() alone still counts buffers that are already garbage.
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  await new Promise((resolve) => setImmediate(resolve));
  gc?.();
  const mem = process.memoryUsage();
  process.send?.({ type: "stats", stats: server.stats(), rss: mem.rss, retained: mem.heapUsed + mem.arrayBuffers });
});
stopOnSigterm(server);
process.send?.({ type: "ready", pid: process.pid });

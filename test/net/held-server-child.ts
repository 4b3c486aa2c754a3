/**
 * A strata server that holds requests unanswered, in a child process, for the tests of the client's
 * check for a vanished server (test/net/server-probe.test.ts): a request must be in flight at the
 * server when the test kills (SIGKILL) or pauses (SIGSTOP) it.
 *
 *   held-server-child.ts server --id ID --data DIR --nats URL [--prefix P] [--tier dir:PATH]
 *                        [--seal-interval-ms N] [--standalone] [--hold-puts]
 *
 * Started through src/testing/process.ts (`script`, `ipc: true`) with the arguments the failover
 * harness gives `strata server` (src/testing/cluster.ts `serverScript`), so it runs alone or in a
 * cluster. Two ways to hold a request, both fault injection a real part does not give on demand:
 * - `--hold-puts` (with no `--tier`): the cold tier is an in-memory object store whose puts never
 *   complete once the server is ready, so a write with `ack: "object"` is never acknowledged
 *   (a blocked object store).
 * - IPC `{ type: "holdReads", prefix }`: from then on kv gets of locations below `prefix` never
 *   complete here; answered `{ type: "holdReads" }`.
 * IPC `{ type: "stats" }` is answered `{ type: "stats", stats }` (the server's counters). It logs
 * `server "<id>" ready` once serving, and stops gracefully on SIGTERM.
 */
import { startServer } from "../../src/net/server/server.js";
import { MemoryObjectStore } from "../../src/testing/fault-store.js";
import { answerStats, serverChildArgs, serverChildOptions, stopOnSigterm } from "../../src/testing/server-child.js";

const args = serverChildArgs("held-server-child.ts server --id ID --data DIR --nats URL [--prefix P] [--tier dir:PATH] [--seal-interval-ms N] [--standalone] [--hold-puts]", ["standalone", "hold-puts"]);

/** An in-memory object store whose puts, once `holding`, never complete. */
class HeldObjectStore extends MemoryObjectStore {
  holding = false;
  override put(key: string, body: Uint8Array): Promise<void> {
    if (this.holding) return new Promise<void>(() => {});
    return super.put(key, body);
  }
}

const held = args.flags["hold-puts"] ? new HeldObjectStore() : undefined;
const server = await startServer({
  ...serverChildOptions(args),
  standalone: args.flags.standalone === true,
  storeOptions: {
    ...(held !== undefined ? { objectStore: held } : args.tier !== undefined ? { tier: args.tier } : {}),
    ...(args.sealIntervalMs !== undefined ? { sealIntervalMs: args.sealIntervalMs } : {}),
  },
});
if (held !== undefined) held.holding = true;

const heldReadPrefixes: string[] = [];
const kvOf = server.store.kv.bind(server.store);
server.store.kv = (location: string) => {
  const handle = kvOf(location);
  if (heldReadPrefixes.some((p) => location.startsWith(p))) handle.getLazy = () => new Promise(() => {});
  return handle;
};

answerStats(server);
process.on("message", (msg: { type?: string; prefix?: string }) => {
  if (msg?.type === "holdReads" && typeof msg.prefix === "string") {
    heldReadPrefixes.push(msg.prefix);
    process.send?.({ type: "holdReads" });
  }
});
stopOnSigterm(server);
process.stdout.write(`server "${args.id}" ready (held-server child, pid ${process.pid})\n`);

/**
 * The `strata` command line. Each command lives in its own file and registers itself here.
 */
import { Command } from "commander";
import { StrataError } from "../errors.js";

/**
 * Each command's module, loaded only when that command runs (all of them for help or a typo):
 * a coordinator need not load the engine, nor a server the benchmarks, which keeps each
 * process's memory to what it uses. Listed in the order help shows them.
 */
const COMMANDS: Record<string, () => Promise<{ register(program: Command): void }>> = {
  reindex: () => import("./reindex.js"),
  server: () => import("./server.js"),
  bench: () => import("./bench.js"),
  coordinator: () => import("./coordinator.js"),
  up: () => import("./up.js"),
  move: () => import("./move.js"),
  drain: () => import("./drain.js"),
  stat: () => import("./stat.js"),
  compact: () => import("./compact.js"),
};

const program = new Command();
program.name("strata").description("Strata: streams and kv stores over core NATS, with tiered storage").showHelpAfterError();

const asked = process.argv[2];
const load = asked !== undefined && Object.hasOwn(COMMANDS, asked) ? [asked] : Object.keys(COMMANDS);
for (const name of load) (await COMMANDS[name]!()).register(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  if (StrataError.is(err)) {
    process.stderr.write(`strata: ${err.code}: ${err.message}\n`);
  } else {
    process.stderr.write(`strata: ${(err as Error)?.stack ?? String(err)}\n`);
  }
  process.exit(1);
});

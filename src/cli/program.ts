/**
 * The commands of the `strata` command line and how the program is put together: each command
 * lives in its own file and registers itself; once every option is declared, the long-running
 * commands get their logging flags and their environment and --config sources
 * (config-sources.ts). Apart from main.ts so tests can build the program without running it.
 */
import { Command } from "commander";
import { configureCommands } from "./config-sources.js";

/**
 * Each command's module, loaded only when that command runs (all of them for help or a typo):
 * a coordinator need not load the engine, nor a server the benchmarks, which keeps each
 * process's memory to what it uses. Listed in the order help shows them.
 */
export const COMMANDS: Record<string, () => Promise<{ register(program: Command): void }>> = {
  reindex: () => import("./reindex.js"),
  server: () => import("./server.js"),
  bench: () => import("./bench.js"),
  coordinator: () => import("./coordinator.js"),
  up: () => import("./up.js"),
  move: () => import("./move.js"),
  drain: () => import("./drain.js"),
  stat: () => import("./stat.js"),
  compact: () => import("./compact.js"),
  http: () => import("./http.js"),
};

/**
 * The program with the commands named in `load` registered, and then (once every option is
 * declared) the logging flags and the environment and --config sources (config-sources.ts).
 */
export async function buildProgram(load: readonly string[] = Object.keys(COMMANDS)): Promise<Command> {
  const program = new Command();
  program.name("strata").description("Strata: streams and kv stores over core NATS, with tiered storage").showHelpAfterError();
  for (const name of load) (await COMMANDS[name]!()).register(program);
  configureCommands(program);
  return program;
}


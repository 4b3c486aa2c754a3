/**
 * The `strata` command line. Each command lives in its own file and registers itself here.
 */
import { Command } from "commander";
import { StrataError } from "../errors.js";
import { register as registerBench } from "./bench.js";
import { register as registerCompact } from "./compact.js";
import { register as registerCoordinator } from "./coordinator.js";
import { register as registerDrain } from "./drain.js";
import { register as registerMove } from "./move.js";
import { register as registerReindex } from "./reindex.js";
import { register as registerServer } from "./server.js";
import { register as registerStat } from "./stat.js";
import { register as registerUp } from "./up.js";

const program = new Command();
program.name("strata").description("Strata: streams and kv stores over core NATS, with tiered storage").showHelpAfterError();

registerReindex(program);
registerServer(program);
registerBench(program);
registerCoordinator(program);
registerUp(program);
registerMove(program);
registerDrain(program);
registerStat(program);
registerCompact(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  if (StrataError.is(err)) {
    process.stderr.write(`strata: ${err.code}: ${err.message}\n`);
  } else {
    process.stderr.write(`strata: ${(err as Error)?.stack ?? String(err)}\n`);
  }
  process.exit(1);
});

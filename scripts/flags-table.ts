/**
 * Prints the README's table of the flags of `strata server`, `coordinator` and `http`, with their
 * environment variables and defaults, generated from the commander definitions
 * (src/cli/config-sources.ts `flagsTable`), between the markers the README keeps it in:
 *
 *   npx tsx scripts/flags-table.ts
 *
 * test/cli/config-sources.test.ts fails when the README's copy differs from this output.
 */
import { flagsTable } from "../src/cli/config-sources.js";
import { buildProgram } from "../src/cli/program.js";

const program = await buildProgram(["server", "coordinator", "http"]);
process.stdout.write(`<!-- flags:begin -->\n${flagsTable(program)}\n<!-- flags:end -->\n`);

/**
 * The `strata` command line: builds the program (program.ts) with the command asked for and runs
 * it; a failure prints `strata: CODE: message` on stderr and exits 1.
 */
import { StrataError } from "../errors.js";
import { COMMANDS, buildProgram } from "./program.js";

const asked = process.argv[2];
const program = await buildProgram(asked !== undefined && Object.hasOwn(COMMANDS, asked) ? [asked] : Object.keys(COMMANDS));
program.parseAsync(process.argv).catch((err: unknown) => {
  if (StrataError.is(err)) {
    process.stderr.write(`strata: ${err.code}: ${err.message}\n`);
  } else {
    process.stderr.write(`strata: ${(err as Error)?.stack ?? String(err)}\n`);
  }
  process.exit(1);
});

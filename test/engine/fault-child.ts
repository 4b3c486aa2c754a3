/**
 * The child process of the fault-injection test (fault-injection.test.ts), for the two faults
 * that must not be tried inside the test's own process: opening a store whose index file was
 * damaged (lmdb maps it; a missed check means SIGBUS or SIGSEGV, which would kill the test runner
 * rather than fail it), and a real crash in the middle of `strata reindex`.
 *
 * Usage: node --import tsx test/engine/fault-child.ts '<json>' where the JSON is `ChildJob`.
 * - "open": opens the store and closes it again (exit 0), so the parent can check what it repaired.
 * - "reindex": runs `Store.reindex`. With `crashAtCall`, the process kills itself with SIGKILL at
 *   that call of the file-system functions recovery uses (counted from the start of the reindex),
 *   which is a crash at a chosen point; the count is deterministic for a given data directory.
 * A StrataError is printed as one JSON line `{"code": …, "message": …}` and exits with code 2; any
 * other death (a signal, an uncaught exception) is what the parent reports as the process dying.
 */
import fs from "node:fs";
import { syncBuiltinESMExports } from "node:module";
import { StrataError } from "../../src/errors.js";
import { Store } from "../../src/store.js";

export interface ChildJob {
  mode: "open" | "reindex";
  dir: string;
  limits: Record<string, number>;
  now: number;
  crashAtCall?: number;
}

/** The fs functions a reindex calls, counted as crash points. */
const CRASH_POINTS = ["openSync", "readSync", "writeSync", "fsyncSync", "ftruncateSync", "renameSync", "rmSync", "readFileSync", "writeFileSync", "mkdirSync"] as const;

function armCrash(at: number): void {
  let calls = 0;
  const table = fs as unknown as Record<string, (...args: unknown[]) => unknown>;
  for (const name of CRASH_POINTS) {
    const real = table[name]!;
    table[name] = (...args: unknown[]) => {
      if (++calls >= at) process.kill(process.pid, "SIGKILL");
      return real(...args);
    };
  }
  syncBuiltinESMExports();
}

async function main(): Promise<void> {
  const job = JSON.parse(process.argv[2]!) as ChildJob;
  const options = { dir: job.dir, limits: job.limits, clock: () => job.now, sweepTimers: false };
  try {
    if (job.mode === "open") {
      const store = await Store.open(options);
      await store.close();
    } else {
      if (job.crashAtCall !== undefined) armCrash(job.crashAtCall);
      await Store.reindex(options);
    }
  } catch (err) {
    if (!StrataError.is(err)) throw err;
    process.stdout.write(`${JSON.stringify({ code: err.code, message: err.message })}\n`);
    process.exitCode = 2;
  }
}

if (process.argv[1]?.endsWith("fault-child.ts")) {
  main().catch((err) => {
    process.stderr.write(`fault-child failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}

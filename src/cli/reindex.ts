/**
 * `strata reindex --data DIR`: rebuilds a stopped server's LMDB index from its segment log. The
 * new index is built beside the old one and swapped in only when complete, so a failure (or a
 * crash) leaves the old index in place. Damaged ranges of the log are skipped and listed.
 */
import type { Command } from "commander";
import { Store } from "../store.js";

export function register(program: Command): void {
  program
    .command("reindex")
    .description("rebuild the index of a stopped server's data directory from its segment log")
    .requiredOption("--data <dir>", "data directory")
    .action(async (opts: { data: string }) => {
      const started = performance.now();
      const report = await Store.reindex({ dir: opts.data, sweepTimers: false });
      const ms = Math.round(performance.now() - started);
      process.stdout.write(`${JSON.stringify({ replayed: report.replayed, cut: report.cut ?? null, damaged: report.damaged, ms })}\n`);
    });
}

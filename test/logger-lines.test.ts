/**
 * warningLineLogger (src/logger.ts): what `strata compact --data` and the benchmarks print for a
 * store's log events: one `<message> (<event>)` line per warn or error event, nothing for lower
 * levels (a clean run prints nothing), the same through a child logger.
 */
import { describe, expect, it } from "vitest";
import { warningLineLogger } from "../src/logger.js";

describe("warningLineLogger", () => {
  it("prints warn and error events as message and event name, and drops the lower levels", () => {
    const lines: Array<[string, string]> = [];
    const logger = warningLineLogger((line, level) => lines.push([level, line]));
    logger.trace({ event: "t" }, "trace");
    logger.debug({ event: "d" }, "debug");
    logger.info({ event: "server_joined" }, "joined");
    expect(lines).toEqual([]);
    logger.warn({ event: "torn_tail_cut", segment: 3 }, "cut a torn tail");
    logger.error({ event: "segment_damaged", code: "CORRUPT" }, "CORRUPT: segment 2 is damaged");
    logger.warn("a message alone");
    logger.child({ component: "tier" }).warn({ event: "upload_retry" }, "upload failed; retrying");
    expect(lines).toEqual([
      ["warn", "cut a torn tail (torn_tail_cut)"],
      ["error", "CORRUPT: segment 2 is damaged (segment_damaged)"],
      ["warn", "a message alone"],
      ["warn", "upload failed; retrying (upload_retry)"],
    ]);
  });
});

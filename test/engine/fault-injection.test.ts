/**
 * The seeded fault-injection test (issue #8, "Make it systematic"): random model workloads of the
 * engine (./workload.ts) run while faults are injected, and after every step the store is held to
 * the model (./fault-harness.ts says exactly what is checked):
 * - ENOSPC and EIO on write and fsync, and torn writes (src/testing/fault-io.ts), after which
 *   writes must work again without a restart;
 * - bit flips in segments: the last record, the middle of the last segment, older segments;
 * - damaged index files (truncated, a garbage page), opened in a child process so that a SIGBUS
 *   fails the test instead of killing it;
 * - crashes at a chosen I/O call, with or without losing what was not fsync'd (power loss), and
 *   real crashes (SIGKILL at a chosen file-system call) in the middle of `strata reindex`;
 * - an object store that fails calls and loses acknowledgements, a restore of a wiped disk cut
 *   short by an outage at a chosen call, then finished.
 *
 * Replay: the test prints its seed. `STRATA_FAULT_SEED=<seed>` reruns the same cases; add
 * `STRATA_FAULT_PATH=<path>` (printed by fast-check on failure) and `-t local` or `-t tier` to
 * jump to the shrunk counterexample of that test. `STRATA_FAULT_RUNS=<n>` runs more cases (the
 * suite runs a few). The local test replays exactly (no timers: every fault is decided by the
 * seed and the call count); the tier test replays the same steps, but its seal and upload timers
 * can move a fault by a call or two.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import fc from "fast-check";
import { afterAll, describe, it } from "vitest";
import type { FaultCode } from "../../src/testing/fault-io.js";
import { FaultHarness, KEYS, KVS, STREAMS, type FaultStep } from "./fault-harness.js";
import { writeOpArb } from "./workload.js";

const SEED = process.env.STRATA_FAULT_SEED !== undefined ? Number(process.env.STRATA_FAULT_SEED) : 20_240_808;
const RUNS = Number(process.env.STRATA_FAULT_RUNS ?? 12);
const PATH = process.env.STRATA_FAULT_PATH;

const LOCS = { streams: STREAMS, kvs: KVS, keys: KEYS };
const smallValue = fc.uint8Array({ maxLength: 40 });
const anyValue = fc.oneof({ weight: 6, arbitrary: smallValue }, { weight: 1, arbitrary: fc.uint8Array({ minLength: 257, maxLength: 1200 }) });
const write = writeOpArb(anyValue, LOCS);
const group = fc.array(writeOpArb(smallValue, LOCS), { minLength: 1, maxLength: 10 });
const code = fc.constantFrom<FaultCode>("ENOSPC", "EIO");

function stepArb(tiered: boolean): fc.Arbitrary<FaultStep> {
  const steps: Array<fc.WeightedArbitrary<FaultStep>> = [
    { weight: 14, arbitrary: write.map((op) => ({ t: "write" as const, op })) },
    { weight: 5, arbitrary: group.map((ops) => ({ t: "group" as const, ops })) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant("tick" as const), ms: fc.integer({ min: 1, max: 3000 }) }) },
    { weight: 1, arbitrary: fc.constant({ t: "sweep" as const }) },
    { weight: 1, arbitrary: fc.constant({ t: "reopen" as const }) },
    {
      weight: 4,
      arbitrary: fc.record({ t: fc.constant("diskFault" as const), on: fc.constantFrom("write" as const, "fsync" as const, "tear" as const), code, count: fc.integer({ min: 1, max: 3 }), ops: group }),
    },
    {
      weight: 3,
      arbitrary: fc.record({ t: fc.constant("crash" as const), after: fc.integer({ min: 0, max: 8 }), power: fc.boolean(), keep: fc.integer({ min: 0, max: 100 }), ops: group }),
    },
    { weight: 2, arbitrary: fc.record({ t: fc.constant("flip" as const), where: fc.constantFrom("tail" as const, "middle" as const, "old" as const), pick: fc.nat() }) },
    { weight: 1, arbitrary: fc.constant({ t: "loseIndex" as const }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant("reindex" as const), crashAt: fc.option(fc.integer({ min: 1, max: 60 }), { nil: undefined }) }) },
  ];
  if (tiered) {
    steps.push({ weight: 2, arbitrary: fc.record({ t: fc.constant("restore" as const), crashAt: fc.option(fc.integer({ min: 0, max: 30 }), { nil: undefined }), checkpoint: fc.boolean() }) });
  } else {
    steps.push({ weight: 1, arbitrary: fc.record({ t: fc.constant("damageIndex" as const), mode: fc.constantFrom("truncate" as const, "garbage" as const), pick: fc.nat() }) });
  }
  return fc.oneof(...steps);
}

const root = fs.mkdtempSync(path.join(os.tmpdir(), "strata-faults-"));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

async function property(tiered: boolean, runs: number, seed: number): Promise<void> {
  let run = 0;
  const notes: string[] = [];
  const stats = new Map<string, number>();
  console.log(`fault-injection (${tiered ? "with a tier" : "local"}): seed ${seed}, ${runs} runs; replay with STRATA_FAULT_SEED=${seed}`);
  try {
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.array(stepArb(tiered), { minLength: 6, maxLength: 30 }), async (faultSeed, steps) => {
        const h = new FaultHarness(path.join(root, `${tiered ? "t" : "l"}-${run++}`), faultSeed, tiered);
        await h.open();
        try {
          for (const step of steps) {
            await h.step(step);
            await h.check();
          }
        } catch (err) {
          (err as Error).message += `\nsteps so far:\n${h.log.join("\n")}\nwarnings:\n${h.warnings.slice(-8).join("\n")}`;
          throw err;
        } finally {
          notes.push(...h.notes);
          for (const [k, v] of h.stats) stats.set(k, (stats.get(k) ?? 0) + v);
          await h.close();
          fs.rmSync(h.dir, { recursive: true, force: true });
        }
      }),
      { seed, numRuns: runs, ...(PATH !== undefined ? { path: PATH } : {}) },
    );
  } catch (err) {
    console.log(`fault-injection FAILED; replay with STRATA_FAULT_SEED=${seed} (and the path fast-check printed as STRATA_FAULT_PATH)`);
    throw err;
  } finally {
    console.log(`fault-injection exercised: ${[...stats].sort().map(([k, v]) => `${k}=${v}`).join(", ")}`);
    if (notes.length > 0) console.log(`fault-injection notes:\n${[...new Set(notes)].slice(0, 10).join("\n")}`);
  }
}

describe("seeded fault injection", () => {
  it("local: keeps every acknowledged write and nothing refused, under disk faults, bit flips, damaged indexes and crashes", async () => {
    await property(false, RUNS, SEED);
  }, 600_000);

  it("tier: also with a flaky object store, through restores of a wiped disk cut short by an outage", async () => {
    await property(true, Math.max(1, Math.ceil(RUNS / 3)), SEED);
  }, 600_000);
});

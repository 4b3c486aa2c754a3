/**
 * startServer and startCoordinator refuse the warning callbacks removed before 1.0 (`onWarning`,
 * the coordinator's `onEvent`): they log through `logger` now, and a JavaScript caller still
 * passing a callback must hear so at once, not run without ever seeing a warning again. The
 * refusal comes before anything is opened or connected, so no NATS server is needed here (the
 * URL below is never dialled) and no data directory is created. Store.open's refusal is in
 * test/engine/bad-input.test.ts.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { StrataError } from "../../src/errors.js";
import { startCoordinator, type CoordinatorOptions } from "../../src/net/coord/coordinator.js";
import { startServer, type ServerOptions } from "../../src/net/server/server.js";

const root = fs.mkdtempSync(path.join(os.tmpdir(), "strata-removed-callbacks-"));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

async function refusal(start: () => Promise<{ stop(): Promise<void> }>): Promise<StrataError> {
  const err = await start().then(
    async (started) => {
      await started.stop();
      return new Error("started");
    },
    (e: unknown) => e,
  );
  expect(StrataError.is(err, "INVALID_ARGUMENT"), String(err)).toBe(true);
  return err as StrataError;
}

describe("the removed warning callbacks", () => {
  const callback = (_message: string): void => undefined;

  it("startServer refuses onWarning and says to pass logger", async () => {
    const dir = path.join(root, "server");
    const err = await refusal(() => startServer({ id: "s1", dir, nats: "nats://127.0.0.1:1", standalone: true, onWarning: callback } as ServerOptions));
    expect(err.message).toMatch(/unknown startServer option "onWarning".*pass logger/);
    expect(fs.existsSync(dir)).toBe(false);
  });

  it("startCoordinator refuses onWarning and onEvent and says to pass logger", async () => {
    for (const name of ["onWarning", "onEvent"]) {
      const dataDir = path.join(root, `coord-${name}`);
      // `nc` is never used: the options are refused first.
      const err = await refusal(() => startCoordinator({ nc: undefined, dataDir, [name]: callback } as unknown as CoordinatorOptions));
      expect(err.message).toMatch(new RegExp(`unknown startCoordinator option "${name}".*pass logger`));
      expect(fs.existsSync(dataDir)).toBe(false);
    }
  });
});

/**
 * `strata http` as an operator runs it, a real child process: it refuses to start without
 * --tokens unless --no-auth is explicit, and with a tokens file it serves the deployment (a real
 * nats-server and standalone server), logs a JSON ready line with its URL, and exits 0 on SIGTERM.
 */
import fs from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { StrataProcess, runCli } from "../../src/testing/process.js";
import { startStack, type Stack } from "../helpers/strata-stack.js";
import { TOKEN_DOC, TOKENS } from "./gateway-stack.js";

let stack: Stack;
const procs: StrataProcess[] = [];
beforeAll(async () => {
  stack = await startStack({ id: "s1" });
});
afterAll(async () => {
  for (const p of procs) if (p.running) await p.kill9();
  await stack?.stop();
});

describe("strata http", () => {
  it("refuses to start without --tokens unless --no-auth is given", async () => {
    const r = await runCli(["http", "--port", "0", "--nats", stack.nats.url, "--server", "s1"], 30_000);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/INVALID_ARGUMENT: the gateway needs --tokens FILE .* or --no-auth/);
  });

  it("serves with a tokens file, logs its URL, and exits 0 on SIGTERM", async () => {
    const dir = await stack.tempDir("cli");
    const file = path.join(dir, "tokens.json");
    fs.writeFileSync(file, JSON.stringify(TOKEN_DOC));
    const gateway = new StrataProcess("http", ["http", "--port", "0", "--nats", stack.nats.url, "--server", "s1", "--tokens", file], /"http_ready"/);
    procs.push(gateway);
    await gateway.start();
    const ready = gateway.output().split("\n").find((line) => line.includes('"http_ready"'))!;
    const url = (JSON.parse(ready) as { url: string }).url;
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const put = await fetch(`${url}/kv/acct%2Falice%2Fcli/k`, { method: "PUT", body: "from the cli", headers: { authorization: `Bearer ${TOKENS.alice}` } });
    expect(put.status).toBe(200);
    expect(new TextDecoder().decode((await stack.store.kv("acct/alice/cli").get("k"))?.value)).toBe("from the cli");
    expect(await gateway.stop()).toBe("0");
  });
});

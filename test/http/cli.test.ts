/**
 * `strata http` as an operator runs it, a real child process: it refuses to start without
 * --tokens unless --no-auth is explicit, and with a tokens file it serves the deployment (a real
 * nats-server and standalone server), logs a JSON ready line with its URL, and exits 0 on SIGTERM.
 */
import { spawn, type ChildProcess } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startStack, type Stack } from "../helpers/strata-stack.js";
import { TOKEN_DOC, TOKENS } from "./gateway-stack.js";

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

let stack: Stack;
beforeAll(async () => {
  stack = await startStack({ id: "s1" });
});
afterAll(async () => {
  await stack?.stop();
});

function strata(args: string[]): ChildProcess {
  return spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "http", ...args], { cwd: REPO_ROOT, stdio: ["ignore", "pipe", "pipe"] });
}

function exited(child: ChildProcess): Promise<{ code: number | null; stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  child.stdout!.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  return new Promise((resolve) => child.on("exit", (code) => resolve({ code, stdout, stderr })));
}

describe("strata http", () => {
  it("refuses to start without --tokens unless --no-auth is given", async () => {
    const r = await exited(strata(["--port", "0", "--nats", stack.nats.url, "--server", "s1"]));
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/INVALID_ARGUMENT: the gateway needs --tokens FILE .* or --no-auth/);
  });

  it("serves with a tokens file, logs its URL, and exits 0 on SIGTERM", async () => {
    const dir = await stack.tempDir("cli");
    const file = path.join(dir, "tokens.json");
    fs.writeFileSync(file, JSON.stringify(TOKEN_DOC));
    const child = strata(["--port", "0", "--nats", stack.nats.url, "--server", "s1", "--tokens", file]);
    const done = exited(child);
    const url = await new Promise<string>((resolve, reject) => {
      let out = "";
      child.stdout!.on("data", (d: Buffer) => {
        out += d.toString();
        for (const line of out.split("\n")) {
          if (!line.includes('"http_ready"')) continue;
          resolve((JSON.parse(line) as { url: string }).url);
        }
      });
      child.on("exit", (code) => reject(new Error(`strata http exited ${code} before it was ready`)));
    });
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const put = await fetch(`${url}/kv/acct%2Falice%2Fcli/k`, { method: "PUT", body: "from the cli", headers: { authorization: `Bearer ${TOKENS.alice}` } });
    expect(put.status).toBe(200);
    expect(new TextDecoder().decode((await stack.store.kv("acct/alice/cli").get("k"))?.value)).toBe("from the cli");
    child.kill("SIGTERM");
    const r = await done;
    expect(r.code).toBe(0);
  });
});

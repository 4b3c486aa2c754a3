/**
 * Where `strata server` / `coordinator` options come from (src/cli/config-sources.ts): flag >
 * STRATA_<FLAG> > --config file (JSON or YAML) > default, for every option, checked in process
 * on the real commands with their actions replaced by one that records the flags. Also: the
 * README's table of flags matches the commander definitions.
 */
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import type { Command } from "commander";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { StrataError } from "../../src/errors.js";
import { flagsTable } from "../../src/cli/config-sources.js";
import { buildProgram } from "../../src/cli/program.js";
import { REPO_ROOT } from "../../src/testing/process.js";

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), "strata-config-"));
});
afterEach(() => {
  vi.unstubAllEnvs();
  fs.rmSync(dir, { recursive: true, force: true });
});

/** The flags `strata <args>` would run with (the action only records them). */
async function flagsOf(args: string[], env: Record<string, string> = {}): Promise<Record<string, unknown>> {
  for (const [k, v] of Object.entries(env)) vi.stubEnv(k, v);
  try {
    const program = await buildProgram([args[0]!]);
    program.exitOverride();
    let seen: Record<string, unknown> | undefined;
    for (const c of program.commands) c.exitOverride().action((flags: Record<string, unknown>) => void (seen = flags));
    await program.parseAsync(args, { from: "user" });
    return seen!;
  } finally {
    vi.unstubAllEnvs();
  }
}

const errorOf = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => e);
const file = (name: string, text: string) => {
  const p = path.join(dir, name);
  fs.writeFileSync(p, text);
  return p;
};
const SERVER = ["server", "--id", "s1", "--data", "/tmp/x", "--nats", "nats://127.0.0.1:1"];

describe("option sources", () => {
  it("takes flag over env over file over default, for each pair", async () => {
    const yaml = file("c.yaml", "sealIntervalMs: 300\nprefix: fromfile\ncacheBytes: 1000\n");
    const env = { STRATA_SEAL_INTERVAL_MS: "200", STRATA_PREFIX: "fromenv" };
    // flag > env (and flag > file)
    const f = await flagsOf([...SERVER, "--config", yaml, "--seal-interval-ms", "100", "--prefix", "fromflag"], env);
    expect(f).toMatchObject({ sealIntervalMs: "100", prefix: "fromflag", cacheBytes: "1000" });
    // env > file
    expect(await flagsOf([...SERVER, "--config", yaml], env)).toMatchObject({ sealIntervalMs: "200", prefix: "fromenv" });
    // file > default (prefix has a declared default, "strata")
    expect(await flagsOf([...SERVER, "--config", yaml])).toMatchObject({ sealIntervalMs: "300", prefix: "fromfile" });
    // default when no source has it
    expect(await flagsOf(SERVER)).toMatchObject({ prefix: "strata", fsync: "always", logLevel: "info", logFormat: "json", compaction: true });
    expect((await flagsOf(SERVER)).sealIntervalMs).toBeUndefined();
  });

  it("reads JSON and YAML files, camelCase or kebab-case keys, and STRATA_CONFIG", async () => {
    const json = file("c.json", JSON.stringify({ "seal-interval-ms": 250, logLevel: "debug", standalone: true, compaction: false }));
    expect(await flagsOf([...SERVER, "--config", json])).toMatchObject({ sealIntervalMs: "250", logLevel: "debug", standalone: true, compaction: false });
    const yaml = file("c.yml", "# a comment\nlog-format: pretty\ninboxPrefix: _INBOX.app\n");
    expect(await flagsOf(SERVER, { STRATA_CONFIG: yaml })).toMatchObject({ logFormat: "pretty", inboxPrefix: "_INBOX.app" });
  });

  it("reads booleans and negated flags from the environment by the name of what they turn off", async () => {
    expect(await flagsOf(SERVER, { STRATA_COMPACTION: "false", STRATA_STANDALONE: "true" })).toMatchObject({ compaction: false, standalone: true });
    expect(await flagsOf(SERVER, { STRATA_COMPACTION: "1" })).toMatchObject({ compaction: true });
    // the flag still wins over the environment
    expect(await flagsOf([...SERVER, "--no-compaction"], { STRATA_COMPACTION: "true" })).toMatchObject({ compaction: false });
    // an empty variable counts as unset
    expect(await flagsOf(SERVER, { STRATA_PREFIX: "" })).toMatchObject({ prefix: "strata" });
  });

  it("lets the environment or the file give a required option", async () => {
    const env = { STRATA_ID: "envid", STRATA_NATS: "nats://127.0.0.1:2" };
    const yaml = file("c.yaml", "data: /tmp/fromfile\n");
    expect(await flagsOf(["server", "--config", yaml], env)).toMatchObject({ id: "envid", data: "/tmp/fromfile", nats: "nats://127.0.0.1:2" });
    expect(await flagsOf(["coordinator"], { STRATA_DATA: "/tmp/c", STRATA_NATS: "nats://127.0.0.1:3", STRATA_LEASE_MS: "3000" })).toMatchObject({ data: "/tmp/c", leaseMs: "3000" });
    const err = await errorOf(flagsOf(["server", "--config", yaml], { STRATA_NATS: "nats://127.0.0.1:2" }));
    expect(StrataError.is(err, "INVALID_ARGUMENT")).toBe(true);
    expect((err as Error).message).toMatch(/--id.*STRATA_ID.*"id"/);
  });

  it("refuses an unknown key, a file that does not parse, and bad values, naming what to fix", async () => {
    const cases: Array<[() => Promise<unknown>, RegExp]> = [
      [() => flagsOf([...SERVER, "--config", file("u.yaml", "sealIntervalMs: 1\nsealIntervalMS: 2\n")]), /"sealIntervalMS", which is no option.*sealIntervalMs/],
      [() => flagsOf([...SERVER, "--config", file("b.json", "{ not json")]), /b\.json is not valid JSON/],
      [() => flagsOf([...SERVER, "--config", file("b.yaml", "a: [1,\n")]), /b\.yaml is not valid YAML/],
      [() => flagsOf([...SERVER, "--config", file("l.yaml", "- a\n- b\n")]), /must hold a mapping/],
      [() => flagsOf([...SERVER, "--config", path.join(dir, "missing.yaml")]), /cannot read the --config file/],
      [() => flagsOf(SERVER, { STRATA_STANDALONE: "maybe" }), /environment variable STRATA_STANDALONE must be true or false/],
      [() => flagsOf(SERVER, { STRATA_LOG_LEVEL: "loud" }), /STRATA_LOG_LEVEL must be one of trace, debug/],
      [() => flagsOf([...SERVER, "--config", file("v.yaml", "prefix: [a, b]\n")]), /"prefix" in .* must be a string or a number/],
      [() => flagsOf([...SERVER, "--config", file("n.yaml", "compaction: nope\n")]), /"compaction" in .* must be true or false/],
    ];
    for (const [run, message] of cases) {
      const err = await errorOf(run());
      expect(StrataError.is(err, "INVALID_ARGUMENT"), String(err)).toBe(true);
      expect((err as Error).message).toMatch(message);
    }
  });
});

describe("README table of flags", () => {
  it("matches the commander definitions (between <!-- flags:begin --> and <!-- flags:end -->)", async () => {
    const program: Command = await buildProgram(["server", "coordinator", "http"]);
    const table = flagsTable(program);
    expect(table).toContain("| server | `--seal-interval-ms <n>` | `STRATA_SEAL_INTERVAL_MS` |");
    expect(table).toContain("| server | `--no-compaction` | `STRATA_COMPACTION` | `true` |");
    expect(table).toContain("| coordinator | `--data <dir>` | `STRATA_DATA` | required |");
    const readme = fs.readFileSync(path.join(REPO_ROOT, "README.md"), "utf8");
    const m = /<!-- flags:begin -->\n([\s\S]*?)\n<!-- flags:end -->/.exec(readme);
    // Fails until the table is in the README: regenerate it with `npx tsx scripts/flags-table.ts`.
    expect(m, "README.md has no <!-- flags:begin --> … <!-- flags:end --> block; paste the output of `npx tsx scripts/flags-table.ts`").not.toBeNull();
    expect(m![1]).toBe(table);
  });
});

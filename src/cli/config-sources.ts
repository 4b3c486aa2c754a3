/**
 * Where the options of the long-running commands (`strata server`, `coordinator`, `http`) come
 * from besides the command line: `STRATA_<FLAG>` environment variables and a `--config FILE`
 * (JSON or YAML). One generic rule for every option a command declares, so a flag added later
 * gets both without extra code:
 *
 *   flag  >  environment  >  config file  >  the default declared on the commander option
 *
 * Names: `--seal-interval-ms` reads `STRATA_SEAL_INTERVAL_MS` and the file key `sealIntervalMs`
 * (camelCase, as in the library's options; the kebab-case `seal-interval-ms` is accepted too).
 * A negated flag is named for what it turns off: `--no-compaction` reads `STRATA_COMPACTION=false`
 * and the key `compaction: false`. Booleans in the environment are true/false (also 1/0, yes/no).
 * An empty variable counts as unset (as in most container tools).
 *
 * Invariants: a value given on the command line is never replaced; a required option is checked
 * only after all three sources were read (so env or file can satisfy it); anything unusable (a
 * file that does not parse, a key no option has, a bad boolean) is a `StrataError("INVALID_ARGUMENT")`
 * naming the key or variable, before the command does anything.
 *
 * Also the logging flags (`--log-level`, `--log-format`) of the long-running commands, the logger
 * built from them, and the README table of flags, env names and defaults (`flagsTable`).
 */
import fs from "node:fs";
import path from "node:path";
import { Option, type Command } from "commander";
import { createRequire } from "node:module";
import { StrataError } from "../errors.js";
import { createLogger, LOG_FORMATS, LOG_LEVELS, type Logger } from "../logger.js";

/** The commands whose every option reads the environment and the config file. */
export const CONFIGURABLE_COMMANDS = ["server", "coordinator", "http"] as const;
/** The commands that log (and so take --log-level and --log-format). */
export const LOGGING_COMMANDS = ["server", "coordinator", "http", "up"] as const;
export const ENV_PREFIX = "STRATA_";
const CONFIG_FLAG = "config";
/** Where a command keeps the names of its required options once commander no longer checks them. */
const REQUIRED = Symbol("strata.required");

export interface LogFlags {
  logLevel: string;
  logFormat: string;
}

/**
 * Adds the logging flags to the commands that log and the environment and config-file sources to
 * the configurable ones. Call once, after every command (and every option) is registered.
 */
export function configureCommands(program: Command): void {
  for (const command of program.commands) {
    const name = command.name();
    if ((LOGGING_COMMANDS as readonly string[]).includes(name)) addLogFlags(command);
    if ((CONFIGURABLE_COMMANDS as readonly string[]).includes(name)) addConfigSources(command);
  }
}

function addLogFlags(command: Command): void {
  if (command.options.some((o) => o.attributeName() === "logLevel")) return;
  command
    .addOption(new Option("--log-level <level>", "least severe log level written").choices(LOG_LEVELS).default("info"))
    .addOption(new Option("--log-format <format>", "json: one JSON object per line; pretty: for people at a terminal").choices(LOG_FORMATS).default(defaultLogFormat(command.name())));
}

/**
 * JSON lines, except for `strata up` run at a terminal: that is someone trying Strata out, who
 * reads its log rather than collects it.
 */
function defaultLogFormat(command: string): string {
  return command === "up" && process.stdout.isTTY === true ? "pretty" : "json";
}

/** The logger of a command, from its --log-level and --log-format; logs go to stdout. */
export function cliLogger(flags: LogFlags, base: Record<string, unknown> = {}): Logger {
  return createLogger({ level: flags.logLevel, format: flags.logFormat, base });
}

/** `--seal-interval-ms` → `STRATA_SEAL_INTERVAL_MS`; `--no-compaction` → `STRATA_COMPACTION`. */
export function envName(option: Option): string {
  const long = (option.long ?? "").replace(/^--/, "").replace(option.negate ? /^no-/ : /^$/, "");
  return ENV_PREFIX + long.toUpperCase().replace(/-/g, "_");
}

/** The options the sources apply to: all but --config and --help. */
function sourcedOptions(command: Command): Option[] {
  return command.options.filter((o) => o.long !== undefined && o.long !== "--help" && o.attributeName() !== CONFIG_FLAG);
}

function addConfigSources(command: Command): void {
  if (command.options.some((o) => o.attributeName() === CONFIG_FLAG)) return;
  command.option("--config <file>", `read options from a JSON or YAML file (keys: the flags in camelCase); flag > ${ENV_PREFIX}<FLAG> > file > default`);
  // Commander checks required options before any hook runs; here they are checked after the
  // environment and the file were read, so either may provide them.
  const required = command.options.filter((o) => o.mandatory);
  for (const o of required) o.makeOptionMandatory(false);
  (command as Command & { [REQUIRED]?: string[] })[REQUIRED] = required.map((o) => o.attributeName());
  command.hook("preAction", (cmd) => {
    applySources(cmd, process.env);
    for (const o of required) {
      if (cmd.getOptionValue(o.attributeName()) === undefined) {
        throw new StrataError("INVALID_ARGUMENT", `strata ${cmd.name()} needs ${o.long} (or ${envName(o)} in the environment, or "${o.attributeName()}" in the --config file)`);
      }
    }
  });
}

/** Sets every option not given on the command line from `env`, else from the --config file. */
export function applySources(command: Command, env: NodeJS.ProcessEnv): void {
  const options = sourcedOptions(command);
  const configPath = (command.getOptionValue(CONFIG_FLAG) as string | undefined) ?? nonEmpty(env[`${ENV_PREFIX}CONFIG`]);
  const file = configPath === undefined ? {} : readConfigFile(configPath, options);
  for (const o of options) {
    const key = o.attributeName();
    const source = command.getOptionValueSource(key);
    if (source !== undefined && source !== "default") continue; // given on the command line
    const variable = envName(o);
    const fromEnv = nonEmpty(env[variable]);
    if (fromEnv !== undefined) {
      command.setOptionValueWithSource(key, valueOf(o, fromEnv, `the environment variable ${variable}`), "env");
    } else if (Object.hasOwn(file, key)) {
      command.setOptionValueWithSource(key, valueOf(o, file[key], `"${key}" in ${configPath}`), "config");
    }
  }
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === "" ? undefined : value;
}

const TRUE = ["true", "1", "yes", "on"];
const FALSE = ["false", "0", "no", "off"];

/** What `raw` (an env string or a file value) means for option `o`; refused with a hint if nothing. */
function valueOf(o: Option, raw: unknown, where: string): unknown {
  const takesValue = o.required || o.optional;
  if (!takesValue) {
    if (typeof raw === "boolean") return raw;
    if (typeof raw === "string" && TRUE.includes(raw.toLowerCase())) return true;
    if (typeof raw === "string" && FALSE.includes(raw.toLowerCase())) return false;
    throw new StrataError("INVALID_ARGUMENT", `${where} must be true or false (for ${o.long}), got ${JSON.stringify(raw)}`);
  }
  let text: string;
  if (typeof raw === "string") text = raw;
  else if (typeof raw === "number" && Number.isFinite(raw)) text = String(raw);
  else if (typeof raw === "boolean" && o.optional) return raw;
  else throw new StrataError("INVALID_ARGUMENT", `${where} must be a string or a number (the value of ${o.long}), got ${JSON.stringify(raw)}`);
  if (o.argChoices !== undefined && !o.argChoices.includes(text)) {
    throw new StrataError("INVALID_ARGUMENT", `${where} must be one of ${o.argChoices.join(", ")} (for ${o.long}), got ${JSON.stringify(text)}`);
  }
  if (o.parseArg === undefined) return text;
  try {
    return o.parseArg(text, undefined);
  } catch (err) {
    throw new StrataError("INVALID_ARGUMENT", `${where} is not a valid ${o.long}: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * The --config file as option keys → values. JSON when it ends in .json, YAML otherwise (YAML is a
 * superset of JSON, so either parses). Keys may be camelCase or kebab-case; nothing else is taken.
 */
export function readConfigFile(file: string, options: Option[]): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (cause) {
    throw new StrataError("INVALID_ARGUMENT", `cannot read the --config file ${file}: ${(cause as Error).message}`, { cause });
  }
  let parsed: unknown;
  try {
    // The YAML parser is loaded only for a YAML file: a process without one does not carry it.
    parsed = path.extname(file).toLowerCase() === ".json" ? JSON.parse(text) : (createRequire(import.meta.url)("yaml") as typeof import("yaml")).parse(text);
  } catch (cause) {
    throw new StrataError("INVALID_ARGUMENT", `the --config file ${file} is not valid ${path.extname(file).toLowerCase() === ".json" ? "JSON" : "YAML"}: ${(cause as Error).message.split("\n")[0]}; fix it or leave --config out`, { cause });
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new StrataError("INVALID_ARGUMENT", `the --config file ${file} must hold a mapping of option names to values (e.g. sealIntervalMs: 500)`);
  }
  const known = new Set(options.map((o) => o.attributeName()));
  const out: Record<string, unknown> = {};
  for (const [rawKey, value] of Object.entries(parsed)) {
    const key = rawKey.includes("-") ? rawKey.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase()) : rawKey;
    if (!known.has(key)) {
      throw new StrataError("INVALID_ARGUMENT", `the --config file ${file} has the key "${rawKey}", which is no option of this command; the keys are: ${[...known].join(", ")}`);
    }
    if (Object.hasOwn(out, key)) throw new StrataError("INVALID_ARGUMENT", `the --config file ${file} sets "${key}" twice (as camelCase and kebab-case); keep one`);
    out[key] = value;
  }
  return out;
}

/** One row of the README's table of flags. */
export interface FlagRow {
  command: string;
  flag: string;
  env: string;
  key: string;
  default: string;
  required: boolean;
  description: string;
}

export function flagRows(program: Command): FlagRow[] {
  const rows: FlagRow[] = [];
  for (const name of CONFIGURABLE_COMMANDS) {
    const command = program.commands.find((c) => c.name() === name);
    if (command === undefined) continue;
    const required = new Set(requiredOf(command));
    for (const o of sourcedOptions(command)) {
      rows.push({
        command: name,
        flag: o.flags,
        env: envName(o),
        key: o.attributeName(),
        // A lone --no-x means x defaults to true (commander sets it so without a declared default).
        default: o.defaultValue !== undefined ? String(o.defaultValue) : o.negate ? "true" : "",
        required: required.has(o.attributeName()),
        description: o.description,
      });
    }
  }
  return rows;
}

/** Names of the options `configureCommands` made optional to check them itself. */
function requiredOf(command: Command): string[] {
  return (command as Command & { [REQUIRED]?: string[] })[REQUIRED] ?? command.options.filter((o) => o.mandatory).map((o) => o.attributeName());
}

/** The Markdown table of `flagRows`, as the README holds it between its flags markers. */
export function flagsTable(program: Command): string {
  const cell = (s: string): string => s.replace(/\|/g, "\\|");
  const lines = ["| Command | Flag | Environment | Default | Description |", "| --- | --- | --- | --- | --- |"];
  for (const r of flagRows(program)) {
    const def = r.required ? "required" : r.default === "" ? "" : `\`${r.default}\``;
    lines.push(`| ${r.command} | \`${cell(r.flag)}\` | \`${r.env}\` | ${def} | ${cell(r.description)} |`);
  }
  return lines.join("\n");
}

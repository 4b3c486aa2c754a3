/**
 * `strata compact`: gives back the space of dead records (docs/compaction.md), in one of two ways:
 *
 *   strata compact --data DIR [--tier URI --id ID] [--dry-run] [--json]
 *       a stopped server's data directory: opens its Store (no timers, no background compaction),
 *       runs `compact({ sealActive: true, all: true })` (its last segment is included: nothing
 *       appends to it) and closes it. A directory a running process holds is refused by the data
 *       lock; a directory whose segments are in an object store is refused without its --tier.
 *   strata compact --server ID --nats URL [--prefix P] [--creds FILE | --user U --pass P] [--dry-run] [--json]
 *       asks a running server (`P.s.<id>.compact`, net/server/server-compact.ts) to do the same and
 *       prints its report; progress is not streamed, so a terminal shows a spinner.
 *
 * Progress and warnings go to stderr (a cli-progress bar on a terminal, plain lines otherwise,
 * nothing with --json), the summary (or with --json one JSON object) to stdout. With --data, each
 * warn or error event the store logs is one line on stderr, `strata compact: warning: <message>
 * (<event>)`, with or without --json; nothing below warn is printed. Errors are StrataErrors;
 * main.ts prints `strata: CODE: message` and exits 1.
 */
import type { Command } from "commander";
import { connect } from "nats";
import cliProgress from "cli-progress";
import type { CompactProgress, CompactReport } from "../compact.js";
import { dataStat } from "../data-stat.js";
import { StrataError } from "../errors.js";
import { DEFAULT_NET_LIMITS } from "../limits.js";
import { Store } from "../store.js";
import { warningLineLogger } from "../logger.js";
import type { ObjectStore } from "../tier/object-store.js";
import { segmentsPrefix } from "../tier/segment-keys.js";
import { parseCompactReport } from "../net/wire/compact-wire.js";
import { DEFAULT_PREFIX, compactSubject, validatePrefix } from "../net/wire/subjects.js";
import { decodeUntrusted, encode } from "../net/wire/wire-codec.js";
import { errorOfReply, fromNatsError } from "../net/wire/wire-errors.js";
import { NATS_FLAG_KEYS, addNatsFlags, natsOptions, type NatsFlags } from "./nats-flags.js";

/** The CLI waits a little longer than the server's own bound, so that the server's TIMEOUT answer arrives. */
export const COMPACT_TIMEOUT_MS_DEFAULT = DEFAULT_NET_LIMITS.compactRequestMs + 60_000;
/** How long inputs are retained after their switch on a stopped directory (a limit must be positive). */
const RETAIN_MS = 1;
/** Plain progress lines (not a terminal): at most one per this many ms within a phase. */
const PLAIN_LINE_MS = 1000;
/** Frames of the spinner shown while a server compacts. */
const SPINNER = ["|", "/", "-", "\\"];
const SPINNER_MS = 120;

export interface CompactFlags extends Partial<NatsFlags> {
  data?: string;
  tier?: string;
  id?: string;
  server?: string;
  prefix?: string;
  timeoutMs?: string;
  dryRun?: boolean;
  json?: boolean;
}

/** Where the command writes: the summary to `out`, progress and warnings to `err` (a terminal when `tty`). */
export interface CompactIo {
  out: (text: string) => void;
  err: (text: string) => void;
  tty: boolean;
}

const processIo = (): CompactIo => ({ out: (t) => process.stdout.write(t), err: (t) => process.stderr.write(t), tty: process.stderr.isTTY === true });

export function register(program: Command): void {
  const command = program
    .command("compact")
    .description("rewrite sealed segments without their dead records (a stopped server's --data DIR, or a running --server ID)")
    .option("--data <dir>", "data directory of a stopped server")
    .option("--tier <uri>", "with --data: the server's cold tier (dir:/path or s3://bucket/prefix?endpoint=URL)")
    .option("--id <id>", "with --tier: the server's id (names its data in the tier)")
    .option("--server <id>", "id of a running server to ask (with --nats)")
    .option("--prefix <prefix>", "with --server: subject prefix", DEFAULT_PREFIX)
    .option("--timeout-ms <ms>", "with --server: how long to wait for the answer", String(COMPACT_TIMEOUT_MS_DEFAULT))
    .option("--dry-run", "report what a compaction would reclaim; write nothing")
    .option("--json", "print one JSON object (no progress)");
  addNatsFlags(command);
  // The NATS flags are shared with the commands that always talk to NATS; here --nats goes only with --server.
  command.options.find((o) => o.long === "--nats")?.makeOptionMandatory(false);
  command.action(async (flags: CompactFlags) => {
    await runCompact(flags);
  });
}

/** The command, with its flags as parsed (tests call it in-process). */
export async function runCompact(flags: CompactFlags, io: CompactIo = processIo()): Promise<CompactReport> {
  const { target, report } = flags.server !== undefined ? await compactServer(checkServerFlags(flags), io) : await compactData(checkDataFlags(flags), io);
  io.out(flags.json ? `${JSON.stringify({ ...target, ...report })}\n` : formatReport(report, target));
  return report;
}

type Target = { data: string } | { server: string };

function checkDataFlags(flags: CompactFlags): CompactFlags & { data: string } {
  if (flags.data === undefined) throw new StrataError("INVALID_ARGUMENT", "strata compact needs --data DIR (a stopped server's data directory) or --server ID --nats URL (a running server)");
  const stray = NATS_FLAG_KEYS.filter((k) => flags[k] !== undefined);
  if (stray.length > 0) throw new StrataError("INVALID_ARGUMENT", `--data compacts a stopped server's directory directly; ${stray.map(flagName).join(", ")} go with --server`);
  if ((flags.tier === undefined) !== (flags.id === undefined)) {
    throw new StrataError("INVALID_ARGUMENT", "--tier and --id go together: the server's id names its data in the tier (use the --id the server runs with)");
  }
  return flags as CompactFlags & { data: string };
}

function checkServerFlags(flags: CompactFlags): CompactFlags & NatsFlags & { server: string } {
  if (flags.data !== undefined) throw new StrataError("INVALID_ARGUMENT", "use either --data DIR (a stopped server) or --server ID (a running one), not both");
  const stray = (["tier", "id"] as const).filter((k) => flags[k] !== undefined);
  if (stray.length > 0) throw new StrataError("INVALID_ARGUMENT", `${stray.map(flagName).join(" and ")} go with --data (a running server uses its own tier)`);
  if (flags.nats === undefined) throw new StrataError("INVALID_ARGUMENT", "--server needs --nats URL (the NATS server(s) the strata server is connected to)");
  validatePrefix(flags.prefix ?? DEFAULT_PREFIX);
  return flags as CompactFlags & NatsFlags & { server: string };
}

const flagName = (k: string): string => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

/** Compacts a stopped server's data directory in this process. */
async function compactData(flags: CompactFlags & { data: string }, io: CompactIo): Promise<{ target: Target; report: CompactReport }> {
  // Read-only first: refuses a missing, empty or damaged directory (Store.open would create an
  // empty one) and a directory in use, and shows whether its segments live in an object store.
  const stat = await dataStat(flags.data);
  const inTier = stat.segments.uploaded.count + stat.segments.evicted.count;
  if (flags.tier === undefined && inTier > 0) {
    throw new StrataError(
      "INVALID_ARGUMENT",
      `${flags.data} belongs to a server with a cold tier (${inTier} of its segments are in the object store); give its --tier URI and --id, or compaction would leave the object store behind`,
    );
  }
  const store = await Store.open({
    dir: flags.data,
    ...(flags.tier !== undefined ? { tier: flags.tier, id: flags.id! } : {}),
    sweepTimers: false,
    compaction: false,
    // The data lock keeps every other process out, and this one reads nothing but the
    // compaction: no reader can hold a pointer into an input, so inputs need not be retained.
    limits: { compactRetainMs: RETAIN_MS },
    // The store's warn and error events, one plain line each (info and below: the summary says it).
    logger: warningLineLogger((line, level) => io.err(`strata compact: ${level === "warn" ? "warning" : "error"}: ${line}\n`)),
  });
  const progress = flags.json ? undefined : progressSink(flags.dryRun === true, io);
  try {
    const started = performance.now();
    // A dry run must not seal either (sealing writes a segment): it leaves the last segment out.
    const dryRun = flags.dryRun === true;
    let report = await store.compact({ sealActive: !dryRun, all: true, dryRun, ...(progress ? { onProgress: (p) => progress.update(p) } : {}) });
    if (!report.dryRun && report.runs > 0) {
      // The inputs of the last run were switched within the retain time of the reclaim that
      // followed it: once that has passed, reclaim them too, so the space is back when we exit.
      await new Promise((resolve) => setTimeout(resolve, RETAIN_MS + 1));
      const more = await store.compactor.reclaim();
      if (more > 0) {
        report = { ...report, reclaimedSegments: report.reclaimedSegments + more, localBytesAfter: store.compactor.localBytes() };
        if (store.tier) report.objectBytesAfter = await objectSegmentBytes(store.tier.objects, flags.id!);
      }
      report.ms = Math.round(performance.now() - started);
    }
    return { target: { data: flags.data }, report };
  } finally {
    progress?.stop();
    await store.close();
  }
}

/** Bytes of server `id`'s segment objects. */
async function objectSegmentBytes(objects: ObjectStore, id: string): Promise<number> {
  let n = 0;
  for await (const o of objects.list(segmentsPrefix(id))) n += o.size;
  return n;
}

/** Asks a running server to compact, and waits for its report. */
async function compactServer(flags: CompactFlags & NatsFlags & { server: string }, io: CompactIo): Promise<{ target: Target; report: CompactReport }> {
  const timeout = Number(flags.timeoutMs ?? COMPACT_TIMEOUT_MS_DEFAULT);
  if (!Number.isSafeInteger(timeout) || timeout <= 0) throw new StrataError("INVALID_ARGUMENT", `--timeout-ms must be a positive integer, got ${JSON.stringify(flags.timeoutMs)}`);
  const subject = compactSubject(flags.prefix ?? DEFAULT_PREFIX, flags.server);
  let nc;
  try {
    nc = await connect({ ...natsOptions(flags, "strata-operator"), maxReconnectAttempts: 0 });
  } catch (err) {
    throw StrataError.is(err) ? err : new StrataError("UNAVAILABLE", `cannot connect to NATS at ${flags.nats}: ${(err as Error).message}`, { cause: err });
  }
  const spinner = flags.json ? undefined : startSpinner(`server ${flags.server} is ${flags.dryRun ? "working out what it would compact" : "compacting"}`, io);
  try {
    let msg;
    try {
      msg = await nc.request(subject, encode(flags.dryRun ? { dryRun: true } : {}), { timeout });
    } catch (err) {
      if ((err as { code?: string }).code === "503") {
        throw new StrataError("UNAVAILABLE", `no server "${flags.server}" listens on ${subject}: is it running, with this --prefix, and may its NATS user subscribe to that subject (deploy/README.md)?`, { cause: err });
      }
      throw fromNatsError(err, `no answer from server "${flags.server}" on ${subject} within ${timeout} ms`);
    }
    const error = errorOfReply(msg, () => `server "${flags.server}" (${subject})`);
    if (error) throw error;
    const report = parseCompactReport(decodeUntrusted(msg.data, `the reply on ${subject}`), `the reply of server "${flags.server}"`);
    return { target: { server: flags.server }, report };
  } finally {
    spinner?.stop();
    await nc.close();
  }
}

interface ProgressSink {
  update(p: CompactProgress): void;
  stop(): void;
}

/** A bar on a terminal, plain lines otherwise (both on stderr). */
function progressSink(dryRun: boolean, io: CompactIo): ProgressSink {
  return io.tty ? terminalBar(dryRun) : plainLines((line) => io.err(`${line}\n`));
}

function terminalBar(dryRun: boolean): ProgressSink {
  const bar = new cliProgress.SingleBar(
    {
      // {total} and {value} are the bar's own (raw bytes); ours are {amount} and {where}.
      format: `${dryRun ? "dry run " : ""}{phase} |{bar}| {percentage}% {amount}{where}`,
      stream: process.stderr,
      hideCursor: true,
      clearOnComplete: true,
      etaBuffer: 50,
    },
    cliProgress.Presets.shades_classic,
  );
  let started = false;
  return {
    update(p) {
      const payload = {
        phase: p.phase.padEnd(7),
        amount: p.bytesTotal > 0 ? `${bytes(p.bytesDone)} of ${bytes(p.bytesTotal)}` : "",
        where: p.segment !== undefined ? ` (segment ${p.segment})` : "",
      };
      const total = Math.max(1, p.bytesTotal);
      if (!started) {
        bar.start(total, Math.min(p.bytesDone, total), payload);
        started = true;
      } else {
        bar.setTotal(total);
        bar.update(Math.min(p.bytesDone, total), payload);
      }
    },
    stop() {
      if (started) bar.stop();
    },
  };
}

/** One line per phase, then at most one a second, and the phase's last one. */
export function plainLines(write: (line: string) => void, now: () => number = Date.now): ProgressSink {
  let phase: string | undefined;
  let lastAt = 0;
  let last: CompactProgress | undefined;
  let lastWritten: CompactProgress | undefined;
  const line = (p: CompactProgress) => {
    const pct = p.bytesTotal > 0 ? ` ${((100 * Math.min(p.bytesDone, p.bytesTotal)) / p.bytesTotal).toFixed(0)}%` : "";
    write(`${p.phase}:${pct} ${bytes(p.bytesDone)} of ${bytes(p.bytesTotal)}${p.segment !== undefined ? ` (segment ${p.segment})` : ""}`);
    lastWritten = p;
    lastAt = now();
  };
  return {
    update(p) {
      if (p.phase !== phase) {
        if (last && last !== lastWritten) line(last); // where the previous phase ended
        phase = p.phase;
        line(p);
      } else if (now() - lastAt >= PLAIN_LINE_MS || (p.bytesTotal > 0 && p.bytesDone >= p.bytesTotal)) {
        line(p);
      }
      last = p;
    },
    stop() {
      if (last && last !== lastWritten) line(last);
    },
  };
}

function startSpinner(what: string, io: CompactIo): { stop(): void } {
  const started = Date.now();
  if (!io.tty) {
    io.err(`${what}; waiting for its report\n`);
    return { stop: () => undefined };
  }
  let frame = 0;
  const draw = () => io.err(`\r${SPINNER[frame++ % SPINNER.length]} ${what} (${Math.round((Date.now() - started) / 1000)} s)`);
  draw();
  const timer = setInterval(draw, SPINNER_MS);
  return {
    stop() {
      clearInterval(timer);
      io.err("\r\x1b[2K");
    },
  };
}

const num = (n: number): string => n.toLocaleString("en-US");

/** Bytes for people: 1.5 MiB, 912 B. */
export function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u += 1;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 2 : 1)} ${units[u]}`;
}

function change(before: number, after: number): string {
  const pct = before > 0 ? ` (${after <= before ? "-" : "+"}${((100 * Math.abs(before - after)) / before).toFixed(1)}%)` : "";
  return `${bytes(before)} -> ${bytes(after)}${pct}`;
}

/** The summary for people. */
export function formatReport(r: CompactReport, target: Target): string {
  const where = "data" in target ? `data directory ${target.data}` : `server ${target.server}`;
  const d = r.dropped;
  const droppedRecords = d.overwritten + d.deleted + d.expired + d.chunks + d.config;
  const rows: Array<[string, string]> = [
    ["segments", `${num(r.segmentsBefore)} -> ${num(r.segmentsAfter)}`],
    ["local bytes", change(r.localBytesBefore, r.localBytesAfter)],
  ];
  if (r.objectBytesBefore !== undefined && r.objectBytesAfter !== undefined) rows.push(["object store", change(r.objectBytesBefore, r.objectBytesAfter)]);
  rows.push(
    [r.dryRun ? "would drop" : "dropped", `${num(droppedRecords)} records, ${bytes(r.droppedBytes)}`],
    ["  by reason", `${num(d.overwritten)} overwritten, ${num(d.deleted)} deleted, ${num(d.expired)} expired, ${num(d.chunks)} chunks, ${num(d.config)} old configs`],
    [r.dryRun ? "would keep" : "kept", `${num(r.keptRecords)} records`],
    ["reclaimed", r.dryRun ? "nothing (dry run)" : `${num(r.reclaimedSegments)} segments deleted`],
    ["time", `${(r.ms / 1000).toFixed(2)} s, ${num(r.runs)} run${r.runs === 1 ? "" : "s"}`],
  );
  const width = Math.max(...rows.map(([k]) => k.length));
  let out = r.dryRun ? `dry run on ${where}: nothing was written; "after" is what a compaction would leave\n` : `compacted ${where}\n`;
  for (const [k, v] of rows) out += `  ${k.padEnd(width)}  ${v}\n`;
  if (!r.dryRun && r.runs === 0) out += "  nothing to compact: no sealed segment holds dead records\n";
  return out;
}

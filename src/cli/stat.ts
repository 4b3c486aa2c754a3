/**
 * `strata stat --data DIR [--tier URI --id ID] [--json] [--all]`: what a stopped server's data
 * directory holds — segments by state (active, sealed, uploaded, local-only, evicted, damaged,
 * switching: an output whose switch was cut short, superseded by a compaction) with their bytes and
 * dead bytes, live and dead bytes, compaction
 * outputs with the segments they cover, locations by kind, the servers it imported locations from,
 * and the locations in its moved-away quarantine (records it never shipped before they moved: kept,
 * never served); with the tier, what the object store holds of the server (segments, outputs,
 * markers, takeover pins). A table for people by default (long lists cut at LIST_SHOWN unless
 * --all), one JSON object with --json (fields are only ever added). Reads without changing anything
 * (../data-stat.ts); a directory a running server holds is refused.
 */
import type { Command } from "commander";
import { SEGMENT_STAT_STATES, dataStat, type DataStat } from "../data-stat.js";
import { StrataError } from "../errors.js";
import { validateServerId } from "../import-locations.js";
import { openObjectStore } from "../tier/object-store.js";

/** Rows of a list (quarantine, foreign logs, skipped records) shown without --all. */
const LIST_SHOWN = 50;

export function register(program: Command): void {
  program
    .command("stat")
    .description("show what a stopped server's data directory holds (segments, locations, quarantine)")
    .requiredOption("--data <dir>", "data directory of a stopped server")
    .option("--tier <uri>", "the server's cold tier (dir:/path or s3://bucket/prefix?endpoint=URL): also list what it holds")
    .option("--id <id>", "with --tier: the server's id (names its data in the tier)")
    .option("--json", "print one JSON object")
    .option("--all", `list every row (otherwise lists stop at ${LIST_SHOWN})`)
    .action(async (opts: { data: string; tier?: string; id?: string; json?: boolean; all?: boolean }) => {
      if ((opts.tier === undefined) !== (opts.id === undefined)) {
        throw new StrataError("INVALID_ARGUMENT", "--tier and --id go together: the server's id names its data in the tier (use the --id the server runs with)");
      }
      const objects = opts.tier !== undefined ? openObjectStore(opts.tier) : undefined;
      try {
        const tier = objects ? { objects, serverId: validateServerId(opts.id, "--id") } : undefined;
        const stat = await dataStat(opts.data, tier ? { tier } : {});
        process.stdout.write(opts.json ? `${JSON.stringify(stat)}\n` : formatStat(stat, { all: opts.all === true }));
      } finally {
        await objects?.close();
      }
    });
}

const num = (n: number): string => n.toLocaleString("en-US");

const plural = (n: number, one: string, many: string): string => `${num(n)} ${n === 1 ? one : many}`;

/** Columns of figures are right-aligned; the first `textColumns` columns hold text, left-aligned. */
function table(header: string[], rows: string[][], textColumns = 1): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) => "  " + cells.map((c, i) => (i < textColumns ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ").trimEnd();
  return [line(header), ...rows.map(line)].join("\n") + "\n";
}

function cut<T>(rows: T[], all: boolean): { shown: T[]; more: string } {
  if (all || rows.length <= LIST_SHOWN) return { shown: rows, more: "" };
  return { shown: rows.slice(0, LIST_SHOWN), more: `  … and ${num(rows.length - LIST_SHOWN)} more (--all or --json lists them)\n` };
}

/** The human-readable report. */
export function formatStat(s: DataStat, opts: { all: boolean }): string {
  let out = `data directory ${s.dir}\n`;
  const cp = s.index.checkpoint;
  out += `index: ${s.index.closedCleanly ? "closed cleanly" : "NOT closed cleanly (the server crashed or is starting); it is brought up to date when the server starts"}; `;
  out += cp ? `reflects the log up to segment ${cp.seg} offset ${num(cp.off)}` : "reflects no record yet";
  out += s.index.logBytesAfterCheckpoint > 0 ? ` (${num(s.index.logBytesAfterCheckpoint)} bytes of log after it are not counted below)\n` : "\n";

  out += "\nsegments\n";
  const segRows = SEGMENT_STAT_STATES.filter((st) => s.segments[st].count > 0 || ["active", "sealed", "uploaded", "evicted"].includes(st)).map((st) => {
    const t = s.segments[st];
    return [st, num(t.count), st === "evicted" ? "-" : num(t.bytes), num(t.deadBytes)];
  });
  segRows.push(["total", num(s.segments.total.count), num(s.segments.total.bytes), num(s.segments.total.deadBytes)]);
  out += table(["state", "count", "local bytes", "dead bytes"], segRows);
  if (s.segments.evicted.count > 0) out += "  evicted: only in the object store (their sizes are there, not in the data directory)\n";
  if (s.segments.missing.count > 0) out += "  missing: the index says these are on the local disk but they are not; if the object store has them, the server records them as evicted when it starts\n";
  if (s.segments.switching.count > 0) out += "  switching: a compaction output whose switch was cut short; it and its inputs hold the same records (counted as live in both here); the server finishes the switch when it starts\n";
  if (s.segments.superseded.count > 0) out += "  superseded: replaced by a compaction output; never read, deleted by the reclaim once no reader, checkpoint or takeover pin needs them\n";
  const sp = s.space;
  out += `  local bytes: ${num(sp.localBytes)} = live ${num(sp.liveBytes)} + dead ${num(sp.deadBytes)} + superseded ${num(sp.supersededBytes)}\n`;

  out += `\ncompaction outputs: ${num(s.compaction.outputs.length)} (next id ${num(s.compaction.next)})\n`;
  if (s.compaction.outputs.length > 0) {
    const { shown, more } = cut(s.compaction.outputs, opts.all);
    out += table(
      ["output", "state", "covers", "local bytes", "dead bytes", "marker"],
      shown.map((o) => [String(o.id), o.state, `${o.lo}..${o.hi}`, o.state === "evicted" ? "-" : num(o.bytes), num(o.deadBytes), o.localMarker ? "yes" : "no"]),
      3,
    );
    out += more;
  }
  if (s.compaction.orphans.length > 0) out += `  orphans (no marker, unknown to the index; deleted when the server starts): ${s.compaction.orphans.join(", ")}\n`;

  out += "\nlocations\n";
  out += table(
    ["kind", "locations", "entries", "bytes"],
    (["stream", "kv", "total"] as const).map((k) => [k, num(s.locations[k].locations), num(s.locations[k].entries), num(s.locations[k].bytes)]),
  );

  out += `\nforeign logs (servers whose segments imported locations point into): ${num(s.foreignLogs.length)}\n`;
  if (s.foreignLogs.length > 0) {
    const { shown, more } = cut(s.foreignLogs, opts.all);
    out += table(["server", "log"], shown.map((f) => [f.server, String(f.log)])) + more;
  }

  out += `\nquarantine (moved away with records never shipped; kept in the log, never served): ${plural(s.quarantine.length, "location", "locations")}\n`;
  if (s.quarantine.length > 0) {
    const { shown, more } = cut(s.quarantine, opts.all);
    out += table(
      ["location", "moved to", "records", "from segment", "noted"],
      shown.map((q) => [q.location, q.movedTo, num(q.records), String(q.fromSegment), new Date(q.at).toISOString()]),
      2,
    );
    out += more;
  }

  if (s.objectStore) out += formatObjectStore(s.objectStore, opts);

  if (s.skippedRecords.length > 0) {
    out += `\nrecords replay could not apply to the index (skipped): ${num(s.skippedRecords.length)}\n`;
    const { shown, more } = cut(s.skippedRecords, opts.all);
    out += table(["location", "reason", "segment", "offset"], shown.map((r) => [r.location, r.reason, String(r.seg), String(r.off)]), 2) + more;
  }
  return out;
}

function formatObjectStore(o: NonNullable<DataStat["objectStore"]>, opts: { all: boolean }): string {
  let out = `\nobject store (server "${o.server}")\n`;
  out += `  segments: ${num(o.segments.normal)} normal + ${num(o.segments.outputs)} compaction outputs, ${num(o.segments.bytes)} bytes; a restore reads ${num(o.resolved)}\n`;
  if (o.superseded.length > 0) out += `  superseded (waiting for the reclaim): ${o.superseded.join(", ")}\n`;
  if (o.orphans.length > 0) out += `  orphan outputs (no marker; deleted when the server starts): ${o.orphans.join(", ")}\n`;
  out += `  compaction markers: ${num(o.markers.length)}\n`;
  if (o.markers.length > 0) {
    const { shown, more } = cut(o.markers, opts.all);
    out += table(["output", "covers"], shown.map((m) => [String(m.id), `${m.lo}..${m.hi}`]), 2) + more;
  }
  out += `  takeover pins: ${num(o.pins.length)}${o.pinnedCut !== null ? ` (segments up to ${o.pinnedCut} are kept as they are)` : ""}\n`;
  if (o.pins.length > 0) {
    const { shown, more } = cut(o.pins, opts.all);
    out += table(["importer", "cut"], shown.map((p) => [p.importer, String(p.cut)])) + more;
  }
  return out;
}

/**
 * A reader of Prometheus text exposition for the metrics tests: samples by name and labels,
 * types and help by metric family, and the convention check every Strata metric must pass.
 */
export interface Exposition {
  text: string;
  /** Metric family → its TYPE. */
  types: Map<string, string>;
  help: Set<string>;
  samples: Array<{ name: string; labels: Record<string, string>; value: number }>;
}

export function parseExposition(text: string): Exposition {
  const types = new Map<string, string>();
  const help = new Set<string>();
  const samples: Exposition["samples"] = [];
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const meta = /^# (TYPE|HELP) (\S+) (.*)$/.exec(line);
    if (meta) {
      if (meta[1] === "TYPE") types.set(meta[2]!, meta[3]!);
      else help.add(meta[2]!);
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not an exposition line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    samples.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return { text, types, help, samples };
}

/** The sum of the samples of `name` whose labels include `labels` (0 when none). */
export function value(e: Exposition, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const s of e.samples) {
    if (s.name !== name) continue;
    if (Object.entries(labels).every(([k, v]) => s.labels[k] === v)) sum += s.value;
  }
  return sum;
}

/** Whether a sample of `name` exists at all. */
export function has(e: Exposition, name: string): boolean {
  return e.samples.some((s) => s.name === name);
}

/** The default process metrics' standard prefixes (collectDefaultMetrics), exempt from `strata_`. */
const PROCESS_PREFIXES = ["process_", "nodejs_"];

/** Convention violations: prefix, `_total` on counters only, units last (`_seconds`, `_bytes`), help on every family. */
export function conventionProblems(e: Exposition): string[] {
  const problems: string[] = [];
  for (const [name, type] of e.types) {
    if (PROCESS_PREFIXES.some((p) => name.startsWith(p))) continue;
    if (!name.startsWith("strata_")) problems.push(`${name}: no strata_ prefix`);
    if (!/^[a-z_][a-z0-9_]*$/.test(name)) problems.push(`${name}: not snake_case`);
    if (!e.help.has(name)) problems.push(`${name}: no HELP`);
    const base = name.replace(/_total$/, "");
    if (type === "counter" && !name.endsWith("_total")) problems.push(`${name}: a counter must end _total`);
    if (type !== "counter" && name.endsWith("_total")) problems.push(`${name}: only counters end _total`);
    if (base.includes("seconds") && !base.endsWith("_seconds")) problems.push(`${name}: seconds must be the unit suffix`);
    if (base.includes("bytes") && !base.endsWith("_bytes")) problems.push(`${name}: bytes must be the unit suffix`);
    if (/_(ms|millis|milliseconds|kb|mb|mib|kib)$/.test(base)) problems.push(`${name}: base units only (seconds, bytes)`);
    if (type === "histogram" && /latency|time|duration/.test(base) && !base.endsWith("_seconds")) problems.push(`${name}: a duration must be in _seconds`);
    if (!["counter", "gauge", "histogram"].includes(type)) problems.push(`${name}: unexpected type ${type}`);
  }
  return problems;
}

export async function scrape(url: string): Promise<Exposition> {
  const res = await fetch(`${url}/metrics`);
  if (res.status !== 200) throw new Error(`GET /metrics answered ${res.status}`);
  if (!(res.headers.get("content-type") ?? "").startsWith("text/plain")) throw new Error(`GET /metrics content-type ${res.headers.get("content-type")}`);
  return parseExposition(await res.text());
}

/**
 * The bodies of the `compact` operator request (`P.s.<id>.compact`, subjects.ts):
 *
 *   request { dryRun?: boolean }   →   reply: the CompactReport of `store.compact()` (docs/compaction.md)
 *
 * Both parsers take decoded, untrusted bodies: the server parses the request, the CLI the reply
 * (a reply comes from whoever answers on that subject). Unknown fields of a request are refused
 * (an operator's typo must not compact for real what was meant as a dry run); unknown fields of
 * a reply are ignored (a later server may report more). Every count must be a non-negative safe
 * integer (`ms` a non-negative number), or the answer is INVALID_ARGUMENT.
 */
import type { CompactDropped, CompactReport } from "../../compact.js";
import { StrataError } from "../../errors.js";
import { describeValue } from "../../validate.js";
import { isPlainMap } from "./wire-codec.js";

export interface CompactRequest {
  dryRun: boolean;
}

const REQUEST_FIELDS = new Set(["dryRun"]);
const COUNTS = ["runs", "segmentsBefore", "segmentsAfter", "localBytesBefore", "localBytesAfter", "droppedBytes", "keptRecords", "reclaimedSegments"] as const;
const OPTIONAL_COUNTS = ["objectBytesBefore", "objectBytesAfter"] as const;
const DROPPED = ["overwritten", "deleted", "expired", "chunks", "config"] as const;

export function parseCompactRequest(body: unknown): CompactRequest {
  if (!isPlainMap(body)) throw new StrataError("INVALID_ARGUMENT", `a compact request must be a map { dryRun?: boolean }; got ${describeValue(body)}`);
  const unknown = Object.keys(body).filter((k) => !REQUEST_FIELDS.has(k));
  if (unknown.length > 0) throw new StrataError("INVALID_ARGUMENT", `a compact request has unknown field(s) ${unknown.join(", ")}; it takes only { dryRun?: boolean }`);
  if (body.dryRun !== undefined && typeof body.dryRun !== "boolean") {
    throw new StrataError("INVALID_ARGUMENT", `compact request dryRun must be true or false; got ${describeValue(body.dryRun)}`);
  }
  return { dryRun: body.dryRun === true };
}

export function parseCompactReport(body: unknown, what: string): CompactReport {
  if (!isPlainMap(body)) throw new StrataError("INVALID_ARGUMENT", `${what} must be a compaction report (a map); got ${describeValue(body)}`);
  if (typeof body.dryRun !== "boolean") throw new StrataError("INVALID_ARGUMENT", `${what}: dryRun must be a boolean; got ${describeValue(body.dryRun)}`);
  if (!isPlainMap(body.dropped)) throw new StrataError("INVALID_ARGUMENT", `${what}: dropped must be a map of counts; got ${describeValue(body.dropped)}`);
  const dropped = {} as CompactDropped;
  for (const k of DROPPED) dropped[k] = count(body.dropped[k], `${what}: dropped.${k}`);
  const report = { dryRun: body.dryRun, dropped } as CompactReport;
  for (const k of COUNTS) report[k] = count(body[k], `${what}: ${k}`);
  for (const k of OPTIONAL_COUNTS) if (body[k] !== undefined) report[k] = count(body[k], `${what}: ${k}`);
  if (typeof body.ms !== "number" || !Number.isFinite(body.ms) || body.ms < 0) throw new StrataError("INVALID_ARGUMENT", `${what}: ms must be a non-negative number; got ${describeValue(body.ms)}`);
  report.ms = body.ms;
  return report;
}

function count(value: unknown, name: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new StrataError("INVALID_ARGUMENT", `${name} must be a non-negative integer; got ${describeValue(value)}`);
  }
  return value;
}

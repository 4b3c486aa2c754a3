/**
 * `Store.importLocations` and its companions, the engine's takeover entry points
 * (docs/failover.md, step 6): validated once here, at the edge; the rows come from
 * ./tier/takeover.ts, and each location's `import` record goes through the group commit like any
 * write, so a call's records share one fsync and the index applies each right after it is durable.
 *
 * Invariants: nothing is written unless every item is valid and every location's rows were
 * prepared (a failure to read the source leaves this store unchanged); the promise resolves only
 * once every import record is fsync'd and applied; writes to a location racing its import are
 * refused with UNAVAILABLE (write-ops.ts), never decided on the state the import replaces.
 */
import type { Committed } from "./commit-queue.js";
import { SERVER_ID } from "./config.js";
import { assert } from "./assert.js";
import { StrataError } from "./errors.js";
import { FOREIGN_SEG_SPAN } from "./index/foreign-logs.js";
import { registerImport } from "./index/import-rows.js";
import type { Limits } from "./limits.js";
import type { ImportRecord, Pointer } from "./log/record.js";
import type { Importer } from "./tier/takeover.js";
import type { Kind } from "./types.js";
import { describeValue, validateArray, validateLocation, validateNonNegativeInt } from "./validate.js";
import type { WriteOp } from "./write-ops.js";

export interface ImportItem {
  location: string;
  /** The server whose object-store data holds the location's history. */
  from: string;
  /** The last segment of `from` to read (inclusive). */
  cut: number;
  /** The coordinator's epoch the location was granted under (kept in the import record). */
  epoch: number;
}

export interface ImportResult {
  location: string;
  /** Where the import record is in this store's log (wait for it with `waitUploaded`). */
  ptr: Pointer;
  /** The location's revision once imported (0: it is empty). */
  rev: number;
  /** Absent when the location is empty. */
  kind?: Kind;
}

/** What an import needs of the store. */
export interface ImportTarget {
  readonly limits: Limits;
  readonly serverId: string;
  readonly importer: Importer | undefined;
  now(): number;
  submit(op: WriteOp): Promise<{ result?: unknown; committed?: Committed }>;
}

export function validateServerId(from: unknown, what = "from"): string {
  if (typeof from !== "string" || !SERVER_ID.test(from)) throw new StrataError("INVALID_ARGUMENT", `${what} must be a server id (1..64 characters of [-_a-zA-Z0-9]), got ${describeValue(from)}`);
  return from;
}

function validateItems(itemsUntrusted: unknown, limits: Limits): ImportItem[] {
  const seen = new Set<string>();
  return validateArray(itemsUntrusted, limits, "importLocations").map((item) => {
    if (typeof item !== "object" || item === null) throw new StrataError("INVALID_ARGUMENT", `an import item must be an object, got ${describeValue(item)}`);
    const i = item as Record<string, unknown>;
    const location = validateLocation(i.location, limits);
    if (seen.has(location)) throw new StrataError("INVALID_ARGUMENT", `location "${location}" is imported twice in one call`);
    seen.add(location);
    const cut = validateNonNegativeInt(i.cut, "cut");
    if (cut >= FOREIGN_SEG_SPAN) throw new StrataError("INVALID_ARGUMENT", `cut ${cut} is not a segment id (they are below 2^32)`);
    return { location, from: validateServerId(i.from), cut, epoch: validateNonNegativeInt(i.epoch, "epoch") };
  });
}

export async function importLocations(target: ImportTarget, itemsUntrusted: unknown): Promise<ImportResult[]> {
  const items = validateItems(itemsUntrusted, target.limits);
  const importer = target.importer;
  if (!importer) throw new StrataError("INVALID_ARGUMENT", "importing a location needs the object store that holds its source; open the store with a tier");
  if (items.length === 0) return [];
  const rows = await importer.prepare(
    target.serverId,
    items.map((i) => ({ loc: i.location, from: i.from, cut: i.cut })),
    target.now(),
  );
  const committed = await Promise.all(
    items.map((item, n) => {
      const r = rows[n]!;
      const record: ImportRecord = { t: "import", loc: item.location, from: item.from, cut: item.cut, epoch: item.epoch, rev: r.meta?.rev ?? 0 };
      if (r.ckpt !== undefined) record.ckpt = r.ckpt;
      registerImport(record, r);
      return target.submit({ op: "import", record });
    }),
  );
  return items.map((item, n) => {
    const c = committed[n]!.committed;
    assert(c !== undefined, `the import of "${item.location}" commits a record`);
    const meta = rows[n]!.meta;
    const out: ImportResult = { location: item.location, ptr: c.ptr, rev: meta?.rev ?? 0 };
    if (meta) out.kind = meta.kind;
    return out;
  });
}

/**
 * Options of `Store.open`, and how they resolve to a complete configuration. A store given no
 * logger logs nothing (library code never writes to the console).
 */
import path from "node:path";
import { StrataError } from "./errors.js";
import { refuseWarningCallbacks, silentLogger, type Logger } from "./logger.js";
import { resolveLimits, type Limits } from "./limits.js";
import type { FileIo } from "./log/file-io.js";
import type { FsyncMode } from "./log/segment-log.js";
import { validateOptionsObject } from "./validate.js";
import type { ObjectStore } from "./tier/object-store.js";

export interface StoreOptions {
  /** Data directory: `segments/` (the log) and `index/` (LMDB) live here. */
  dir: string;
  /** Server id; names this store's data in the object store. Default "local". */
  id?: string;
  /** Cold tier: "dir:/path" or "s3://bucket/prefix?endpoint=…". */
  tier?: string;
  /** An object store instance to use as the cold tier instead of `tier` (tests inject one). */
  objectStore?: ObjectStore;
  /** Budget for local segment files once they are in the object store. */
  cacheBytes?: number;
  /** A dirty active segment is sealed (and shipped) at least this often. */
  sealIntervalMs?: number;
  /**
   * "always" (default): a local ack means the record is fdatasync'd. "interval": acks once written
   * to the OS, synced every fsyncIntervalMs (survives a process crash, not an OS crash).
   */
  fsync?: FsyncMode;
  /** Any other limit of `limits.ts`. */
  limits?: Partial<Limits>;
  /**
   * Where the store logs (pino-compatible, src/logger.ts): warnings worth an operator's attention
   * (a cut torn tail, a rebuilt index, a failing upload) as events with an `event` name and fields.
   * None: the store logs nothing.
   */
  logger?: Logger;
  /** Clock in ms since the epoch; tests inject one to control TTLs and dedup windows. */
  clock?: () => number;
  /** Run the TTL sweeper on a timer (default true); tests may sweep by hand instead. */
  sweepTimers?: boolean;
  /** Compact in the background on the maintenance timer (default true; docs/compaction.md). */
  compaction?: boolean;
  /** @internal The segment log's file I/O, for fault injection in tests (src/testing/fault-io.ts). */
  io?: FileIo;
}

export interface StoreConfig {
  dir: string;
  id: string;
  tier?: string;
  limits: Limits;
  logger: Logger;
  clock: () => number;
  sweepTimers: boolean;
  compaction: boolean;
  fsync: FsyncMode;
  io?: FileIo;
}

/** What a server id may be (it names the server's data in the object store). */
export const SERVER_ID = /^[-_a-zA-Z0-9]{1,64}$/;
const OPTION_NAMES = ["dir", "id", "tier", "objectStore", "cacheBytes", "sealIntervalMs", "limits", "logger", "clock", "sweepTimers", "compaction", "fsync", "io"];

export function resolveStoreConfig(options: StoreOptions): StoreConfig {
  if (options === null || typeof options !== "object" || typeof options.dir !== "string" || options.dir.length === 0) {
    throw new StrataError("INVALID_ARGUMENT", "Store.open needs { dir: \"path/to/data\" }");
  }
  refuseWarningCallbacks(options, "Store.open");
  validateOptionsObject(options, OPTION_NAMES, "Store.open");
  const id = options.id ?? "local";
  if (!SERVER_ID.test(id)) throw new StrataError("INVALID_ARGUMENT", `id "${id}" must be 1..64 characters of [-_a-zA-Z0-9]`);
  const limits = resolveLimits({
    ...options.limits,
    ...(options.cacheBytes !== undefined ? { cacheBytes: options.cacheBytes } : {}),
    ...(options.sealIntervalMs !== undefined ? { sealIntervalMs: options.sealIntervalMs } : {}),
  });
  const config: StoreConfig = {
    dir: path.resolve(options.dir),
    id,
    limits,
    logger: options.logger ?? silentLogger,
    clock: options.clock ?? Date.now,
    sweepTimers: options.sweepTimers ?? true,
    compaction: options.compaction ?? true,
    fsync: options.fsync ?? "always",
  };
  if (typeof config.compaction !== "boolean") throw new StrataError("INVALID_ARGUMENT", `compaction must be true or false, got ${JSON.stringify(options.compaction)}`);
  if (config.fsync !== "always" && config.fsync !== "interval") {
    throw new StrataError("INVALID_ARGUMENT", `fsync must be "always" or "interval", got ${JSON.stringify(options.fsync)}`);
  }
  if (options.tier !== undefined) config.tier = options.tier;
  if (options.io !== undefined) config.io = options.io;
  return config;
}

/**
 * The package's public surface: `import { Store, StrataClient, StrataError } from "strata"`.
 * Named mod.ts (as nats.js names its entry) so that it does not read as the LMDB index, src/index/.
 */
export { Store, type ChangeListener } from "./store.js";
export type { StoreOptions } from "./config.js";
export { createLogger, silentLogger, type Logger, type LogFn } from "./logger.js";
export { StrataError, ERROR_CODES, type ErrorCode } from "./errors.js";
export { DEFAULT_LIMITS, type Limits } from "./limits.js";
export type { StreamHandle } from "./stream-handle.js";
export type { KvHandle } from "./kv-handle.js";
export type * from "./types.js";
export { StrataClient } from "./net/client/client.js";
export type { KvCache, KvCacheOptions } from "./net/client/kv-cache.js";

/**
 * The wire layer's limits live with every other limit in `src/limits.ts`; this module keeps the
 * names the network code imports.
 */
export {
  DEFAULT_CLIENT_LIMITS,
  DEFAULT_NET_LIMITS,
  resolveClientLimits,
  resolveNetLimits,
  type ClientLimits,
  type NetLimits,
} from "../../limits.js";

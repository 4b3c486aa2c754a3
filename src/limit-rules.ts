/**
 * The decisions of per-location limits (docs/compaction.md, "Per-location limits"), pure: given a
 * location's limits and its message (or key) count and value bytes before and after a write, is
 * the write refused, and how much must a stream with `discard: "old"` drop? ./write-ops.ts calls
 * these while it prepares a batch, so a limit is enforced in the same commit as the write.
 *
 * Rules (the model tests mirror them):
 * - A value larger than `maxMsgBytes`, or larger than `maxBytes` (it could never be stored), is
 *   refused with LIMIT, whatever `discard` says.
 * - `discard: "new"` (a kv always): a write is refused with LIMIT when it leaves the location over
 *   a limit that it makes worse: it adds a message or key past `maxMsgs`, or adds bytes past
 *   `maxBytes`. A write that does not grow a measure (an overwrite with a smaller value) passes
 *   even while the location is over (a config lowered with discard "new" drops nothing).
 * - `discard: "old"` (the stream default): after the write, the oldest messages (lowest seqs)
 *   are dropped until both measures fit.
 * - `denyDelete` is sticky, so that an append-only stream stays one against anyone who may write
 *   it (a config is a write): a config of a location that denies deletes must keep `denyDelete`
 *   and may not make a dropping limit stricter (add or lower maxMsgs, maxBytes or maxAgeMs, or
 *   switch discard to "old"); and `set()` may not overwrite an existing message. FORBIDDEN.
 */
import { StrataError } from "./errors.js";
import type { Kind, LocationLimits } from "./types.js";

export interface Usage {
  count: number;
  bytes: number;
}

/** The value of a write that no configuration lets through (LIMIT), checked before anything is staged. */
export function checkValueSize(loc: string, kind: Kind, limits: LocationLimits | undefined, size: number): void {
  if (!limits) return;
  if (limits.maxMsgBytes !== undefined && size > limits.maxMsgBytes) {
    throw new StrataError("LIMIT", `the value is ${size} bytes and ${kind} "${loc}" has maxMsgBytes ${limits.maxMsgBytes}; send a smaller value or raise the location's limit with config()`);
  }
  if (limits.maxBytes !== undefined && size > limits.maxBytes) {
    throw new StrataError("LIMIT", `the value is ${size} bytes and ${kind} "${loc}" has maxBytes ${limits.maxBytes}, so it could never be stored; send a smaller value or raise maxBytes with config()`);
  }
}

/** Whether the location drops old messages rather than refusing new ones. */
export function discardsOld(kind: Kind, limits: LocationLimits | undefined): boolean {
  return kind === "stream" && (limits?.discard ?? "old") === "old";
}

/** Whether the limits bound the count or the bytes at all (else no usage needs tracking). */
export function boundsUsage(limits: LocationLimits | undefined): boolean {
  return limits !== undefined && (limits.maxMsgs !== undefined || limits.maxBytes !== undefined);
}

/** discard "new": refuses (LIMIT) a write that takes usage from `before` to `after` past a limit it makes worse. */
export function checkGrowth(loc: string, kind: Kind, limits: LocationLimits | undefined, before: Usage, after: Usage): void {
  if (!limits || discardsOld(kind, limits)) return;
  const what = kind === "kv" ? "keys" : "messages";
  if (limits.maxMsgs !== undefined && after.count > limits.maxMsgs && after.count > before.count) {
    throw new StrataError("LIMIT", `${kind} "${loc}" holds ${before.count} ${what} and its maxMsgs is ${limits.maxMsgs} (discard "new"); delete some or raise the limit with config()`);
  }
  if (limits.maxBytes !== undefined && after.bytes > limits.maxBytes && after.bytes > before.bytes) {
    throw new StrataError("LIMIT", `${kind} "${loc}" holds ${before.bytes} value bytes, the write would make it ${after.bytes}, and its maxBytes is ${limits.maxBytes} (discard "new"); delete some or raise the limit with config()`);
  }
}

/** discard "old": how many messages and bytes must go for `usage` to fit (both 0: nothing to drop). */
export function excessOf(limits: LocationLimits | undefined, usage: Usage): Usage {
  if (!limits || !discardsOld("stream", limits)) return { count: 0, bytes: 0 };
  return {
    count: limits.maxMsgs !== undefined ? Math.max(0, usage.count - limits.maxMsgs) : 0,
    bytes: limits.maxBytes !== undefined ? Math.max(0, usage.bytes - limits.maxBytes) : 0,
  };
}

export function deniesDelete(loc: string, kind: Kind, limits: LocationLimits | undefined): void {
  if (limits?.denyDelete) {
    throw new StrataError("FORBIDDEN", `${kind} "${loc}" denies deletes (denyDelete); only its limits drop old data, and denyDelete cannot be lifted`);
  }
}

/** denyDelete: an existing message is not overwritten either (FORBIDDEN). */
export function deniesOverwrite(loc: string, limits: LocationLimits | undefined, exists: boolean): void {
  if (limits?.denyDelete && exists) {
    throw new StrataError("FORBIDDEN", `stream "${loc}" denies deletes (denyDelete), so its messages cannot be overwritten either; append instead`);
  }
}

const DROPPING_LIMITS = ["maxMsgs", "maxBytes", "maxAgeMs"] as const;

/** denyDelete is sticky: a new configuration must keep it and drop no more than the old one (FORBIDDEN). */
export function checkConfigChange(loc: string, kind: Kind, old: LocationLimits | undefined, next: LocationLimits): void {
  if (!old?.denyDelete) return;
  const refuse = (why: string) => new StrataError("FORBIDDEN", `${kind} "${loc}" denies deletes (denyDelete), which cannot be lifted or worked around: ${why}`);
  if (!next.denyDelete) throw refuse("the new configuration leaves denyDelete out");
  for (const name of DROPPING_LIMITS) {
    const was = old[name];
    const now = next[name];
    if (now !== undefined && (was === undefined || now < was)) throw refuse(`${name} ${now} would drop more than ${was === undefined ? "no limit" : was}`);
  }
  if (kind === "stream" && discardsOld(kind, next) && !discardsOld(kind, old)) throw refuse(`discard "old" would drop messages that discard "new" keeps`);
}

/**
 * Assertions for conditions that can only be false because of a bug in Strata itself.
 * They are never used for input validation: bad input gets a StrataError at the edge.
 */
export class AssertionError extends Error {
  constructor(message: string) {
    super(`assertion failed: ${message}`);
    this.name = "AssertionError";
  }
}

export function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new AssertionError(message);
}

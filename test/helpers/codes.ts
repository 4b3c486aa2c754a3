/**
 * The StrataError code a call fails with, for tests that compare codes: `codeOf` throws when the
 * call succeeds or fails with anything but a StrataError, so an assertion on its result can fail.
 */
import { expect } from "vitest";
import { StrataError } from "../../src/errors.js";

export async function codeOf(work: Promise<unknown>): Promise<string> {
  try {
    await work;
  } catch (err) {
    expect(err).toBeInstanceOf(StrataError);
    return (err as StrataError).code;
  }
  throw new Error("expected the call to fail");
}

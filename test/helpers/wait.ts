/**
 * Waiting in tests where no event exists: `eventually` polls a condition with a bound. Bounded
 * promises use src/with-timeout.ts.
 */
export async function eventually(condition: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

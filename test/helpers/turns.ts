/**
 * Counting the turns of the event loop (check phases) that some work leaves to others, without a
 * clock: a setImmediate chain counts one per turn while the work runs. Used where a test pins
 * that long or repeated work yields (sealing in slices, lone writes fdatasync'd on the event loop).
 */

/** Runs `work`, counting the turns of the event loop it leaves to others. */
export async function turnsDuring<T>(work: () => Promise<T>): Promise<{ value: T; turns: number }> {
  let turns = 0;
  let on = true;
  const tick = () => {
    if (!on) return;
    turns++;
    setImmediate(tick);
  };
  setImmediate(tick);
  try {
    return { value: await work(), turns };
  } finally {
    on = false;
  }
}

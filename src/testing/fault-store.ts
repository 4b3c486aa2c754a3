/**
 * Object stores for tests: `MemoryObjectStore`, a complete in-memory backend, and
 * `FaultyObjectStore`, a wrapper that injects the failures a real object store has (requests
 * that fail, acknowledgements lost after the write happened, corrupted reads, latency, outages)
 * from a seed, so a property test that finds a bug replays it exactly.
 *
 * Determinism: every operation draws the same fixed number of values from a mulberry32 stream,
 * synchronously when it is called, so the fate of the n-th call depends only on the seed and n.
 * Sequential use replays exactly; concurrent calls with delays get the same fates but may
 * interleave differently in the wrapped store, as timers decide.
 */
import { StrataError } from "../errors.js";
import {
  closedError,
  validateBody,
  validateKey,
  validatePrefix,
  validateRange,
  type ByteRange,
  type ObjectInfo,
  type CreateOnly,
  type ObjectStore,
  type PutIfAbsentResult,
} from "../tier/object-store.js";
import { mulberry32 } from "../random.js";
export { mulberry32 };

/** Keys per page of a memory listing: small, so tests of big listings cross page boundaries. */
export const MEMORY_LIST_PAGE_SIZE = 100;


/**
 * A copy that shares no memory with `bytes`. Not `bytes.slice()`: on a Buffer (which callers and
 * backends hand around as Uint8Array) `slice` is a view, so "copies" would alias the stored object.
 */
function copyOf(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes);
}

/** A complete in-memory `ObjectStore`: stores copies, hands out copies, lists a page at a time. */
export class MemoryObjectStore implements ObjectStore {
  private readonly objects = new Map<string, Uint8Array>();
  private closed = false;
  /** The check and the write happen in one synchronous step (see `putIfAbsent`). */
  readonly createOnly: CreateOnly = "enforced";

  /** Number of objects stored (for tests). */
  get count(): number {
    return this.objects.size;
  }

  async put(key: string, body: Uint8Array): Promise<void> {
    this.checkOpen();
    validateKey(key);
    validateBody(body);
    this.objects.set(key, copyOf(body));
  }

  /**
   * Goes through `this.put`, so a test subclass that intercepts puts (to fail or hold them)
   * intercepts these too. The base `put` stores before its first await, so the check and the
   * write are one step here; a subclass that awaits before calling `super.put` gives that up.
   */
  async putIfAbsent(key: string, body: Uint8Array): Promise<PutIfAbsentResult> {
    this.checkOpen();
    validateKey(key);
    validateBody(body);
    if (this.objects.has(key)) return "exists";
    await this.put(key, body);
    return "created";
  }

  async get(key: string, range?: ByteRange): Promise<Uint8Array | undefined> {
    this.checkOpen();
    validateKey(key);
    validateRange(range);
    const body = this.objects.get(key);
    if (body === undefined) return undefined;
    if (range === undefined) return copyOf(body);
    return copyOf(body.subarray(Math.min(range.offset, body.length), Math.min(body.length, range.offset + range.length)));
  }

  async head(key: string): Promise<{ size: number } | undefined> {
    this.checkOpen();
    validateKey(key);
    const body = this.objects.get(key);
    return body === undefined ? undefined : { size: body.length };
  }

  async *list(prefix: string): AsyncGenerator<ObjectInfo> {
    this.checkOpen();
    validatePrefix(prefix);
    // Page by "keys after the last one yielded", as S3 does, so changes made during the listing
    // behave like they would there rather than like a snapshot.
    let after: string | undefined;
    for (;;) {
      const page = [...this.objects.keys()]
        .filter((k) => k.startsWith(prefix) && (after === undefined || k > after))
        .sort()
        .slice(0, MEMORY_LIST_PAGE_SIZE);
      for (const key of page) {
        const body = this.objects.get(key);
        if (body !== undefined) yield { key, size: body.length };
      }
      if (page.length < MEMORY_LIST_PAGE_SIZE) return;
      after = page[page.length - 1];
      this.checkOpen();
    }
  }

  async delete(key: string): Promise<void> {
    this.checkOpen();
    validateKey(key);
    this.objects.delete(key);
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  private checkOpen(): void {
    if (this.closed) throw closedError("memory");
  }
}

export interface FaultOptions {
  /** Seed of the fault stream; the same seed and the same calls give the same faults. */
  seed: number;
  /** Probability that a put or delete fails with UNAVAILABLE. Default 0. */
  putFailRate?: number;
  /** Probability that a get, head or list fails with UNAVAILABLE. Default 0. */
  getFailRate?: number;
  /** Probability that a non-empty get returns a copy with one byte flipped. Default 0. */
  corruptRate?: number;
  /** Each call first waits a uniformly drawn 0..delayMsMax milliseconds. Default 0 (no wait). */
  delayMsMax?: number;
  /**
   * Fraction of failed puts and deletes that had already been applied when they failed, as when
   * a network drops the acknowledgement. Default 0: a failed write changed nothing.
   */
  failAfterApplyRate?: number;
}

export interface FaultCounts {
  writeFailures: number;
  readFailures: number;
  corruptions: number;
  appliedThenFailed: number;
  offlineRejections: number;
}

/** The fate of one call, drawn when it is made. */
interface Fate {
  delayMs: number;
  fail: boolean;
  appliedBeforeFail: boolean;
  corrupt: boolean;
  corruptAt: number; // fraction of the body length
  corruptMask: number; // 1..255, so the byte always changes
}

const RATE_NAMES = ["putFailRate", "getFailRate", "corruptRate", "failAfterApplyRate"] as const;

/**
 * Wraps an `ObjectStore` (and owns it: `close` closes it) and injects faults. Keys, prefixes and
 * ranges are validated before any fault, so bad input always gets INVALID_ARGUMENT.
 */
export class FaultyObjectStore implements ObjectStore {
  private readonly random: () => number;
  private readonly options: Required<FaultOptions>;
  private offline = false;
  private closed = false;
  private readonly faults: FaultCounts = {
    writeFailures: 0, readFailures: 0, corruptions: 0, appliedThenFailed: 0, offlineRejections: 0,
  };

  constructor(readonly inner: ObjectStore, options: FaultOptions) {
    if (!Number.isInteger(options?.seed)) throw new StrataError("INVALID_ARGUMENT", "FaultyObjectStore needs an integer seed");
    const resolved: Required<FaultOptions> = {
      seed: options.seed,
      putFailRate: options.putFailRate ?? 0,
      getFailRate: options.getFailRate ?? 0,
      corruptRate: options.corruptRate ?? 0,
      delayMsMax: options.delayMsMax ?? 0,
      failAfterApplyRate: options.failAfterApplyRate ?? 0,
    };
    for (const name of RATE_NAMES) {
      const rate = resolved[name];
      if (!(rate >= 0 && rate <= 1)) throw new StrataError("INVALID_ARGUMENT", `${name} must be between 0 and 1, got ${rate}`);
    }
    if (!Number.isSafeInteger(resolved.delayMsMax) || resolved.delayMsMax < 0) {
      throw new StrataError("INVALID_ARGUMENT", `delayMsMax must be a non-negative integer, got ${resolved.delayMsMax}`);
    }
    this.options = resolved;
    this.random = mulberry32(resolved.seed);
  }

  /** While offline, every call fails with UNAVAILABLE (after its drawn delay), as in an outage. */
  setOffline(offline: boolean): void {
    this.offline = offline;
  }

  /** How many faults have been injected so far. */
  get counts(): Readonly<FaultCounts> {
    return { ...this.faults };
  }

  async put(key: string, body: Uint8Array): Promise<void> {
    const fate = this.draw(this.options.putFailRate);
    validateKey(key);
    validateBody(body);
    await this.write(fate, `put ${key}`, () => this.inner.put(key, body));
  }

  /** Faults as for `put`; a failure after the write was applied leaves the object created. */
  async putIfAbsent(key: string, body: Uint8Array): Promise<PutIfAbsentResult> {
    const fate = this.draw(this.options.putFailRate);
    validateKey(key);
    validateBody(body);
    return this.write(fate, `put ${key} (create-only)`, () => this.inner.putIfAbsent(key, body));
  }

  get createOnly(): CreateOnly {
    return this.inner.createOnly;
  }

  async delete(key: string): Promise<void> {
    const fate = this.draw(this.options.putFailRate);
    validateKey(key);
    await this.write(fate, `delete ${key}`, () => this.inner.delete(key));
  }

  async get(key: string, range?: ByteRange): Promise<Uint8Array | undefined> {
    const fate = this.draw(this.options.getFailRate);
    validateKey(key);
    validateRange(range);
    await this.beforeRead(fate, `get ${key}`);
    const body = await this.inner.get(key, range);
    if (body === undefined || body.length === 0 || !fate.corrupt) return body;
    // Corrupt a copy: the stored object stays intact, as with a bit flipped in transit.
    const copy = copyOf(body);
    copy[Math.floor(fate.corruptAt * copy.length)] ^= fate.corruptMask;
    this.faults.corruptions++;
    return copy;
  }

  async head(key: string): Promise<{ size: number } | undefined> {
    const fate = this.draw(this.options.getFailRate);
    validateKey(key);
    await this.beforeRead(fate, `head ${key}`);
    return this.inner.head(key);
  }

  list(prefix: string): AsyncIterable<ObjectInfo> {
    // Drawn now, not on the first next(), so the fate belongs to the call order.
    const fate = this.draw(this.options.getFailRate);
    return this.listWith(fate, prefix);
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.inner.close();
  }

  private async *listWith(fate: Fate, prefix: string): AsyncGenerator<ObjectInfo> {
    validatePrefix(prefix);
    await this.beforeRead(fate, `list ${prefix}`);
    yield* this.inner.list(prefix);
  }

  /** Always draws the same number of values, whatever the outcome, to keep the stream aligned. */
  private draw(failRate: number): Fate {
    const r = this.random;
    const delay = r(), fail = r(), applied = r(), corrupt = r(), at = r(), mask = r();
    return {
      delayMs: Math.floor(delay * (this.options.delayMsMax + 1)),
      fail: fail < failRate,
      appliedBeforeFail: applied < this.options.failAfterApplyRate,
      corrupt: corrupt < this.options.corruptRate,
      corruptAt: at,
      corruptMask: 1 + Math.floor(mask * 255),
    };
  }

  private async write<T>(fate: Fate, what: string, apply: () => Promise<T>): Promise<T> {
    await this.delayAndCheckOnline(fate, what);
    if (!fate.fail) return apply();
    this.faults.writeFailures++;
    if (fate.appliedBeforeFail) {
      await apply();
      this.faults.appliedThenFailed++;
      throw injected(`${what}: injected failure after the write was applied (lost acknowledgement)`);
    }
    throw injected(`${what}: injected failure`);
  }

  private async beforeRead(fate: Fate, what: string): Promise<void> {
    await this.delayAndCheckOnline(fate, what);
    if (fate.fail) {
      this.faults.readFailures++;
      throw injected(`${what}: injected failure`);
    }
  }

  private async delayAndCheckOnline(fate: Fate, what: string): Promise<void> {
    if (this.closed) throw closedError("fault-injecting");
    if (fate.delayMs > 0) await new Promise((resolve) => setTimeout(resolve, fate.delayMs));
    if (this.offline) {
      this.faults.offlineRejections++;
      throw injected(`${what}: the object store is offline (simulated outage)`);
    }
  }
}

function injected(message: string): StrataError {
  return new StrataError("UNAVAILABLE", message);
}

/**
 * An `ObjectStore` that forwards every call to `inner`; tests extend it to gate, count or share a
 * backend by overriding only the calls they change.
 */
export class ForwardingObjectStore implements ObjectStore {
  constructor(protected readonly inner: ObjectStore) {}
  put(key: string, body: Uint8Array): Promise<void> {
    return this.inner.put(key, body);
  }
  putIfAbsent(key: string, body: Uint8Array): Promise<PutIfAbsentResult> {
    return this.inner.putIfAbsent(key, body);
  }
  get createOnly(): CreateOnly {
    return this.inner.createOnly;
  }
  get(key: string, range?: ByteRange): Promise<Uint8Array | undefined> {
    return this.inner.get(key, range);
  }
  head(key: string): Promise<{ size: number } | undefined> {
    return this.inner.head(key);
  }
  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }
  delete(key: string): Promise<void> {
    return this.inner.delete(key);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

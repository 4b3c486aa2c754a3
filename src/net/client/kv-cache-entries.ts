/**
 * The entries a kv read cache holds (kv-cache.ts), and what they cost in memory.
 *
 * Invariants:
 * - `bytes` is the sum of `sizeOf` over the held entries: key (2 bytes a character, V8's widest),
 *   value, headers and a fixed per-entry overhead; it is what `cacheBytesMax` is compared with.
 * - A held value never shares its buffer with anything else: values decoded from the wire are
 *   views into the whole message or batch they came in, and holding such a view would keep the
 *   whole buffer alive while counting only the view. A view is copied when it is taken in.
 * - An entry whose value the feed did not carry at all (`chunked`: too large for one message,
 *   watch.ts) is held as a marker without its value; get() reads such a key from the server.
 */
import type { Change, KvEntry } from "../../types.js";

/**
 * What one entry costs besides its key, value and headers: the Map slot, the entry objects and the
 * Uint8Array with its ArrayBuffer. Measured with Node 20: about 400 bytes an entry for a 10-character
 * key and a 16-byte value.
 */
export const ENTRY_OVERHEAD_BYTES = 360;

export interface Held {
  entry: KvEntry;
  /** The value is not held (a chunked change): read the key from the server. */
  remote: boolean;
  bytes: number;
}

export class CacheEntries {
  private readonly map = new Map<string, Held>();
  bytes = 0;

  get size(): number {
    return this.map.size;
  }

  get(key: string): Held | undefined {
    return this.map.get(key);
  }

  entries(): IterableIterator<Held> {
    return this.map.values();
  }

  /** Applies one kv change (set, delete or expire) of the watch. */
  apply(change: Change): void {
    if (change.kind !== "kv") return;
    if (change.op !== "set") {
      this.remove(change.key);
      return;
    }
    const remote = change.chunked;
    const entry = owned(change.entry, remote);
    const held: Held = { entry, remote, bytes: sizeOf(entry) };
    this.remove(change.key);
    this.map.set(change.key, held);
    this.bytes += held.bytes;
  }

  clear(): void {
    this.map.clear();
    this.bytes = 0;
  }

  private remove(key: string): void {
    const old = this.map.get(key);
    if (old === undefined) return;
    this.map.delete(key);
    this.bytes -= old.bytes;
  }
}

export function sizeOf(entry: KvEntry): number {
  let bytes = ENTRY_OVERHEAD_BYTES + entry.key.length * 2 + entry.value.byteLength;
  if (entry.headers !== undefined) for (const [k, v] of Object.entries(entry.headers)) bytes += 2 * (k.length + v.length) + 32;
  return bytes;
}

/** The entry with a value of its own (see the header), or none at all for a chunked one. */
function owned(entry: KvEntry, remote: boolean): KvEntry {
  const v = entry.value;
  const value = remote ? new Uint8Array(0) : v.byteOffset === 0 && v.byteLength === v.buffer.byteLength ? v : new Uint8Array(v); // (Buffer#slice would be a view)
  const out: KvEntry = { key: entry.key, value, revision: entry.revision, timestamp: entry.timestamp };
  if (entry.headers !== undefined) out.headers = entry.headers;
  if (entry.expiresAt !== undefined) out.expiresAt = entry.expiresAt;
  return out;
}

/**
 * A committed log record seen as a change of its location, as the change hook and the change
 * feed report it. Large (chunked) values are not inlined: the change says `chunked: true`.
 */
import { assert } from "./assert.js";
import type { LogRecord } from "./log/record.js";
import type { Change, KvEntry, StoredMessage } from "./types.js";

export function changeOf(rec: LogRecord, removed: number): Change {
  assert(rec.t !== "chunk" && rec.t !== "import" && rec.t !== "config", "chunks, imports and configs are not changes");
  // Written out without object spreads: this runs for every committed write, and V8 (Node 20)
  // builds `{ ...base, more }` about a hundred times slower than a plain literal.
  switch (rec.t) {
    case "sset": {
      const message: StoredMessage = { seq: rec.seq, value: rec.chunks ? new Uint8Array(0) : rec.value, timestamp: rec.ts };
      if (rec.headers) message.headers = rec.headers;
      return { location: rec.loc, revision: rec.rev, timestamp: rec.ts, kind: "stream", op: "set", seq: rec.seq, message, size: rec.size, chunked: rec.chunks !== undefined };
    }
    case "sdel":
      return { location: rec.loc, revision: rec.rev, timestamp: rec.ts, kind: "stream", op: "delete", seq: rec.seq };
    case "sdelall":
      return { location: rec.loc, revision: rec.rev, timestamp: rec.ts, kind: "stream", op: "deleteAll", endSeq: rec.endSeq, count: removed };
    case "kset": {
      const entry: KvEntry = { key: rec.key, value: rec.chunks ? new Uint8Array(0) : rec.value, revision: rec.rev, timestamp: rec.ts };
      if (rec.headers) entry.headers = rec.headers;
      if (rec.expiresAt !== undefined) entry.expiresAt = rec.expiresAt;
      return { location: rec.loc, revision: rec.rev, timestamp: rec.ts, kind: "kv", op: "set", key: rec.key, entry, size: rec.size, chunked: rec.chunks !== undefined };
    }
    case "kdel":
      return { location: rec.loc, revision: rec.rev, timestamp: rec.ts, kind: "kv", op: rec.expired ? "expire" : "delete", key: rec.key };
  }
}

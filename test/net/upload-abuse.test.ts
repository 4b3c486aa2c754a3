/**
 * Upload slots and orphaned chunks (issue #8 item 7), against a real nats-server and in-process
 * servers, speaking the raw upload protocol as a hostile client would:
 * - one client may hold at most `uploadsPerClientMax` upload slots; another client still gets one;
 * - a client that sends a tiny chunk often enough to renew the idle timer is still dropped once it
 *   falls below `uploadBytesPerSecMin`, and its slot is freed;
 * - the chunk records an abandoned upload wrote are counted dead per segment, stay counted after
 *   a restart, chunks left open by a "crash" are counted at the next open, and the chunks of a
 *   completed upload are never counted.
 */
import { Encoder, decode } from "cbor-x";
import type { Msg, NatsConnection, Subscription } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { deadBytesBySegment } from "../../src/index/dead-chunks.js";
import { startServer, type StrataServer } from "../../src/net/server/server.js";
import { errorOfReply } from "../../src/net/wire/wire-errors.js";
import { Store } from "../../src/store.js";
import type { StoreOptions } from "../../src/config.js";
import { startBus, type Bus } from "../helpers/strata-stack.js";

const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });
const KiB = 1024;
/** Small chunk records, so a modest upload writes many of them. */
const storeLimits: StoreOptions["limits"] = { chunkBytes: 16 * KiB, recordBytesMax: 32 * KiB, headersBytesMax: 8 * KiB };

let bus: Bus;
let nc: NatsConnection;
const cleanup: Array<() => Promise<unknown>> = [];

beforeAll(async () => {
  bus = await startBus();
  ({ nc } = bus);
});

afterAll(async () => {
  for (const fn of cleanup.reverse()) await fn();
  await bus?.stop();
});

async function serve(id: string, limits: Parameters<typeof startServer>[0]["limits"]): Promise<{ store: Store; server: StrataServer; dir: string }> {
  const dir = await bus.tempDir("upload-abuse");
  const store = await Store.open({ dir, id, limits: storeLimits });
  // A short grace: the slot tests leave uploads open on purpose.
  const server = await startServer({ standalone: true, store, nats: nc, id, limits: { shutdownGraceMs: 300, ...limits } });
  const handle = { store, server, dir };
  cleanup.push(async () => {
    await handle.server.stop();
    await handle.store.close();
  });
  return handle;
}

/** A raw reply inbox: every message that arrives, in order, with a bounded wait for the next. */
class Inbox {
  private readonly got: Msg[] = [];
  private wake: (() => void) | undefined;
  private readonly sub: Subscription;
  constructor(readonly subject: string) {
    this.sub = nc.subscribe(subject, {
      callback: (_e, m) => {
        this.got.push(m);
        this.wake?.();
      },
    });
  }
  async next(ms = 5000): Promise<Msg> {
    const deadline = Date.now() + ms;
    while (this.got.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no message on ${this.subject} within ${ms} ms`);
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, left);
      });
    }
    return this.got.shift()!;
  }
  close(): void {
    this.sub.unsubscribe();
  }
}

/** Starts an upload of a stream.append with a `bytes`-byte value; returns its id (or the error code). */
async function startUpload(subject: string, inbox: Inbox, bytes: number): Promise<{ up?: string; code?: string; head: Uint8Array }> {
  const head = cbor.encode({ op: "stream.append", message: {} });
  nc.publish(subject, cbor.encode({ op: "upload", head: head.byteLength, bytes }), { reply: inbox.subject });
  const msg = await inbox.next();
  const err = errorOfReply(msg, () => subject);
  if (err) return { code: err.code, head };
  return { up: (decode(msg.data) as { up: string }).up, head };
}

function sendChunk(subject: string, inbox: Inbox, up: string, k: number, data: Uint8Array): void {
  nc.publish(subject, cbor.encode({ op: "chunk", upload: up, k, data }), { reply: inbox.subject });
}

async function until(what: string, ok: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

const deadTotal = (store: Store) => [...deadBytesBySegment(store.index).values()].reduce((a, b) => a + b, 0);
const openChunkCount = (store: Store) => store.index.openChunks.getKeysCount();

describe("upload slots", () => {
  it("one client holds at most uploadsPerClientMax slots; another client still gets one", async () => {
    const { server } = await serve("slots", { uploadsPerClientMax: 2, uploadsMax: 4 });
    const W = "strata.w.slots.acct.alice.big";
    const inboxes = ["_INBOX.mallory.1", "_INBOX.mallory.2", "_INBOX.mallory.3", "_INBOX.alice.1"].map((s) => new Inbox(s));
    const [a1, a2, a3, b1] = inboxes as [Inbox, Inbox, Inbox, Inbox];
    expect((await startUpload(W, a1, 1 << 20)).up).toBeDefined();
    expect((await startUpload(W, a2, 1 << 20)).up).toBeDefined();
    expect((await startUpload(W, a3, 1 << 20)).code).toBe("UNAVAILABLE");
    expect((await startUpload(W, b1, 1 << 20)).up).toBeDefined();
    expect(server.stats().uploadsOpen).toBe(3);
    for (const i of inboxes) i.close();
  });

  it("a client trickling tiny chunks to renew the idle timer is dropped below uploadBytesPerSecMin, and its slot is freed", async () => {
    const { server, store } = await serve("trickle", { uploadIdleMs: 400, uploadBytesPerSecMin: 16 * KiB });
    const W = "strata.w.trickle.acct.alice.slow";
    const inbox = new Inbox("_INBOX.slowpoke.1");
    const { up, head } = await startUpload(W, inbox, 1 << 20);
    expect(up).toBeDefined();
    const started = Date.now();
    let granted = 4;
    sendChunk(W, inbox, up!, 0, head);
    let failure: string | undefined;
    let message = "";
    // One byte every 100 ms: far inside uploadIdleMs (400), far below 16 KiB/s.
    for (let k = 1; failure === undefined && Date.now() - started < 4000; k++) {
      if (k < granted) sendChunk(W, inbox, up!, k, new Uint8Array([k & 0xff]));
      else k--;
      const msg = await inbox.next(100).catch(() => undefined);
      if (!msg) continue;
      const err = errorOfReply(msg, () => W);
      if (err) {
        failure = err.code;
        message = err.message;
      } else {
        granted = (decode(msg.data) as { grant: number }).grant;
      }
    }
    expect(failure).toBe("TIMEOUT");
    expect(message).toContain("uploadBytesPerSecMin");
    expect(Date.now() - started).toBeLessThan(2000);
    await until("the slot to be freed", () => server.stats().uploadsOpen === 0);
    expect(store.inventory("acct/alice/slow").count).toBe(0);
    inbox.close();
  });
});

describe("chunks of abandoned uploads are counted dead", () => {
  it("abandoned: counted; completed: not counted; after a restart: still the same", async () => {
    const { store, server, dir } = await serve("orphans", { uploadIdleMs: 1000 });
    const W = "strata.w.orphans.acct.alice.big";
    const inbox = new Inbox("_INBOX.orphans.1");

    // Abandon an upload after 120 KiB of its 400 KiB value: the writer writes up to 7 chunk records
    // (fewer if the timeout overtakes it on a loaded machine).
    const { up, head } = await startUpload(W, inbox, 400 * KiB);
    sendChunk(W, inbox, up!, 0, new Uint8Array([...head, ...new Uint8Array(60 * KiB).fill(1)]));
    sendChunk(W, inbox, up!, 1, new Uint8Array(60 * KiB).fill(2));
    let reply: Msg;
    do reply = await inbox.next();
    while (!errorOfReply(reply, () => W));
    expect(errorOfReply(reply, () => W)?.code).toBe("TIMEOUT");
    await until("the abandoned chunks to be counted dead", () => deadTotal(store) > 0);
    const dead = deadTotal(store);
    expect(dead).toBeGreaterThanOrEqual(16 * KiB);
    expect(dead).toBeLessThan(8 * 17 * KiB);
    expect(openChunkCount(store)).toBe(0);

    // A completed upload: its chunks are referenced, not dead, not left open.
    const done = new Inbox("_INBOX.orphans.2");
    const value = new Uint8Array(200 * KiB).fill(7);
    const second = await startUpload(W, done, value.byteLength);
    const all = new Uint8Array([...second.head, ...value]);
    let k = 0;
    let sent = 0;
    let granted = 4;
    let final: Msg | undefined;
    while (!final) {
      while (sent < all.byteLength && k < granted) {
        const piece = all.subarray(sent, sent + 50 * KiB);
        sendChunk(W, done, second.up!, k++, piece);
        sent += piece.byteLength;
      }
      const msg = await done.next();
      const body = errorOfReply(msg, () => W) ? undefined : (decode(msg.data) as { grant?: number; ok?: unknown });
      if (body?.grant !== undefined) granted = body.grant;
      else final = msg;
    }
    expect(errorOfReply(final, () => W)).toBeUndefined();
    expect(store.inventory("acct/alice/big").count).toBe(1);
    expect(openChunkCount(store)).toBe(0);
    expect(deadTotal(store)).toBe(dead);
    inbox.close();
    done.close();

    // Restart: the count is durable, and the completed value's chunks are still not dead.
    await server.stop();
    await store.close();
    const reopened = await Store.open({ dir, id: "orphans", limits: storeLimits });
    try {
      expect(deadTotal(reopened)).toBe(dead);
      expect(Buffer.from((await reopened.stream("acct/alice/big").get(1))!.value).equals(value)).toBe(true);
    } finally {
      await reopened.close();
    }
  });

  it("chunks still open when the store closes (no set record will come) are counted dead at the next open, also after a reindex", async () => {
    const dir = await bus.tempDir("open-chunks");
    const store = await Store.open({ dir, id: "s", limits: storeLimits });
    await store.stream("acct/a/kept").append({ value: new Uint8Array(100 * KiB).fill(3) });
    // What a crash between the chunks and their set record leaves: chunk records nothing lists.
    const orphans = await Promise.all([1, 2, 3].map(() => store.submit({ op: "chunk", data: new Uint8Array(16 * KiB) })));
    const orphanBytes = orphans.reduce((n, o) => n + o.committed!.ptr.len, 0);
    expect(openChunkCount(store)).toBe(3);
    expect(deadTotal(store)).toBe(0);
    await store.close();

    const reopened = await Store.open({ dir, id: "s", limits: storeLimits });
    expect(deadTotal(reopened)).toBe(orphanBytes);
    expect(openChunkCount(reopened)).toBe(0);
    await reopened.close();

    await Store.reindex({ dir, id: "s", limits: storeLimits });
    const rebuilt = await Store.open({ dir, id: "s", limits: storeLimits });
    try {
      expect(deadTotal(rebuilt)).toBe(orphanBytes);
      expect((await rebuilt.stream("acct/a/kept").get(1))?.value.byteLength).toBe(100 * KiB);
    } finally {
      await rebuilt.close();
    }
  });
});

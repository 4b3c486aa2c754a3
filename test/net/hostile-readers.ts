/**
 * Hostile readers for memory tests: clients that ask a strata server for a lot and then read
 * slowly or not at all.
 *
 * - `starveStreams`: opens getAll streams on a nats.js connection and never grants credit (the
 *   replies that do arrive are read and dropped, as a buggy or malicious client would).
 * - `RawNatsClient`: a NATS client written straight on a TCP socket whose socket is paused right
 *   after connecting, so it never reads a byte: everything sent to it piles up in the kernel,
 *   then in nats-server, then (if the server does not hold back) in the strata server.
 * Requests use reply subjects under `_INBOX.`, as real clients do.
 */
import net from "node:net";
import { Encoder } from "cbor-x";
import { createInbox, type NatsConnection, type Subscription } from "nats";

const cbor = new Encoder({ useRecords: false, mapsAsObjects: true, tagUint8Array: false });

export const encodeRequest = (body: Record<string, unknown>): Uint8Array => cbor.encode(body);

/** Read subject of a location on server `id` (prefix "strata"). */
export function readSubject(id: string, location: string): string {
  return `strata.r.${id}.${location.split("/").join(".")}`;
}

/** Opens `count` getAll streams of `location` that never grant credit; returns how many messages arrived. */
export function starveStreams(nc: NatsConnection, id: string, location: string, count: number): { received: () => number; sub: Subscription } {
  const inbox = createInbox();
  let received = 0;
  const sub = nc.subscribe(`${inbox}.*`, { callback: () => void (received += 1) });
  for (let i = 0; i < count; i++) nc.publish(readSubject(id, location), encodeRequest({ op: "stream.getAll" }), { reply: `${inbox}.${i}` });
  return { received: () => received, sub };
}

/** A NATS client on a raw socket that subscribes to its inbox and sends requests, but never reads. */
export class RawNatsClient {
  readonly inbox = createInbox();
  private constructor(private readonly socket: net.Socket) {}

  static async connect(port: number): Promise<RawNatsClient> {
    const socket = net.connect({ host: "127.0.0.1", port });
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    socket.on("error", () => {
      // nats-server closes a slow consumer; that is expected here
    });
    // Never read: what nats-server sends stays in the kernel's buffers, then in nats-server's.
    socket.pause();
    const client = new RawNatsClient(socket);
    client.write(`CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":false,"protocol":1}\r\n`);
    client.write(`SUB ${client.inbox}.* 1\r\n`);
    return client;
  }

  private write(data: string | Uint8Array): void {
    if (!this.socket.destroyed) this.socket.write(data);
  }

  /** Publishes a request whose replies go to this client's (unread) inbox. */
  request(subject: string, body: Uint8Array, n: number): void {
    this.write(`PUB ${subject} ${this.inbox}.${n} ${body.byteLength}\r\n`);
    this.write(body);
    this.write("\r\n");
  }

  /** Resolves once everything written so far has been handed to the kernel. */
  async flushed(): Promise<void> {
    if (this.socket.writableLength === 0 || this.socket.destroyed) return;
    await new Promise<void>((resolve) => this.socket.write("", () => resolve()));
  }

  get closed(): boolean {
    return this.socket.destroyed;
  }

  close(): void {
    this.socket.destroy();
  }
}

/**
 * A stream location over NATS: the StreamApi of the in-process store, request for request, plus
 * watch(). Arguments are checked by the server (the one edge that matters); the client only
 * shapes them into the request and decides whether a value travels inline or as an upload.
 */
import type {
  AppendOptions,
  DeleteAllResult,
  DeleteResult,
  Inventory,
  ItemResult,
  LocationLimits,
  Message,
  StoredMessage,
  StreamApi,
  WriteOptions,
  WriteResult,
} from "../../types.js";
import type { Caller, CallOptions, StreamedValue, ValueRequest } from "./client-call.js";
import { getStreamed, type StreamedGet } from "./get-streamed.js";
import { Watcher, type Watch, type WatchDeps } from "./watch.js";
import { compact, type WireMap } from "../wire/wire-codec.js";

export class StreamClient implements StreamApi {
  private readonly read: CallOptions;
  private readonly write: CallOptions;

  constructor(
    private readonly caller: Caller,
    private readonly deps: WatchDeps,
    readonly location: string,
  ) {
    this.read = { location, cls: "r", idempotent: true };
    this.write = { location, cls: "w", idempotent: false };
  }

  async append(message: Message, options?: AppendOptions): Promise<WriteResult> {
    const call = hasMsgId(options) ? { ...this.write, idempotent: true } : this.write;
    return (await this.caller.request(call, withValue(message, (m) => withOptions({ op: "stream.append", message: m }, options)))) as WriteResult;
  }

  /** As append({ value }), for a value read from `value.chunks` as it is sent (client-call.ts StreamedValue; the HTTP gateway's large POSTs). */
  async appendStreamed(value: StreamedValue, options?: AppendOptions): Promise<WriteResult> {
    const call = hasMsgId(options) ? { ...this.write, idempotent: true } : this.write;
    return (await this.caller.request(call, { value, build: (v?: Uint8Array) => withOptions({ op: "stream.append", message: v === undefined ? {} : { value: v } }, options) })) as WriteResult;
  }

  /** All items in one request and one reply; each item succeeds or fails on its own. */
  async appendMany(items: Array<{ message: Message; options?: AppendOptions }>): Promise<Array<ItemResult<WriteResult>>> {
    const list = Array.isArray(items) ? items.map((i) => compact({ message: shape(i?.message), options: i?.options })) : items;
    const idempotent = Array.isArray(items) && items.every((i) => hasMsgId(i?.options));
    return (await this.caller.request({ ...this.write, idempotent }, { op: "stream.appendMany", items: list })) as Array<ItemResult<WriteResult>>;
  }

  async set(seq: number, message: Message, options?: WriteOptions): Promise<WriteResult> {
    return (await this.caller.request(this.write, withValue(message, (m) => compact({ op: "stream.set", seq, message: m, options })))) as WriteResult;
  }

  async setMany(items: Array<{ seq: number; message: Message; options?: WriteOptions }>): Promise<Array<ItemResult<WriteResult>>> {
    const list = Array.isArray(items) ? items.map((i) => compact({ seq: i?.seq, message: shape(i?.message), options: i?.options })) : items;
    return (await this.caller.request(this.write, { op: "stream.setMany", items: list })) as Array<ItemResult<WriteResult>>;
  }

  async get(seq: number): Promise<StoredMessage | undefined> {
    return ((await this.caller.request(this.read, { op: "stream.get", seq })) ?? undefined) as StoredMessage | undefined;
  }

  /** As get(), with the value read as it arrives (see KvClient.getStreamed; get-streamed.ts). */
  async getStreamed(seq: number): Promise<StreamedGet<Omit<StoredMessage, "value">> | undefined> {
    const got = await getStreamed(this.caller, this.read, { op: "stream.get", seq });
    if (got === undefined) return undefined;
    const r = got.result as unknown as StoredMessage;
    const meta: Omit<StoredMessage, "value"> & { bytes: number } = { seq: r.seq, timestamp: r.timestamp, bytes: got.bytes };
    if (r.headers !== undefined) meta.headers = r.headers;
    return { meta, chunks: got.chunks };
  }

  async delete(seq: number, options?: WriteOptions): Promise<DeleteResult> {
    return (await this.caller.request(this.write, compact({ op: "stream.delete", seq, options }))) as DeleteResult;
  }

  /** Messages with seq >= startSeq, streamed in batches with flow control. */
  async *getAll(options?: { startSeq?: number }): AsyncGenerator<StoredMessage> {
    const body = compact({ op: "stream.getAll", startSeq: options?.startSeq });
    for await (const item of this.caller.items(this.read, body)) {
      // Field by field, not `{ rev, ...message }`: V8 builds an object rest far slower, per item.
      const wire = item as StoredMessage & { rev?: number };
      const message: StoredMessage = { seq: wire.seq, value: wire.value, timestamp: wire.timestamp };
      if (wire.headers !== undefined) message.headers = wire.headers;
      yield message;
    }
  }

  async deleteAll(options?: { endSeq?: number } & WriteOptions): Promise<DeleteAllResult> {
    return (await this.caller.request(this.write, compact({ op: "stream.deleteAll", options }))) as DeleteAllResult;
  }

  async inventory(): Promise<Inventory> {
    return (await this.caller.request(this.read, { op: "inventory" })) as Inventory;
  }

  /**
   * Sets the location's limits (the whole configuration) on its write subject; resolves to the
   * stored, normalised configuration. Not repeated after a TIMEOUT: another client's config may
   * have followed it.
   */
  async config(limits: LocationLimits, options?: WriteOptions): Promise<LocationLimits> {
    return (await this.caller.request(this.write, compact({ op: "stream.config", limits, options }))) as LocationLimits;
  }

  /** Replays messages with seq >= startSeq (default 1), then follows every change live. */
  watch(options: { startSeq?: number } = {}): Watch {
    return new Watcher(this.deps, this.location, { kind: "stream", startSeq: options.startSeq ?? 1 }).start();
  }
}

function hasMsgId(options: AppendOptions | undefined): boolean {
  return typeof options?.msgId === "string";
}

/**
 * Only the fields of a Message go on the wire (a StoredMessage passed back carries a seq, too),
 * and only those that are set. Written out field by field: this runs for every append.
 */
function shape(message: Message): unknown {
  if (message === null || typeof message !== "object") return message;
  return message.value === undefined ? metaOf(message) : withMessageValue(message, message.value);
}

/** The fields of a message other than its value. */
function metaOf(message: Message): Omit<Message, "value"> {
  const out: Omit<Message, "value"> = {};
  if (message.headers !== undefined) out.headers = message.headers;
  if (message.timestamp !== undefined) out.timestamp = message.timestamp;
  return out;
}

/** A request whose message value may be uploaded separately when it is large. */
function withValue(message: Message, build: (message: unknown) => WireMap): WireMap | ValueRequest {
  if (message === null || typeof message !== "object" || !(message.value instanceof Uint8Array)) return build(shape(message));
  const value = message.value;
  const meta = metaOf(message);
  return { value, build: (v) => build(v === undefined ? meta : withMessageValue(meta, v)) };
}

/** The fields of `meta` other than its value, plus `value`, as a new object. */
function withMessageValue(meta: Omit<Message, "value">, value: Uint8Array): Message {
  const out: Message = metaOf(meta);
  out.value = value;
  return out;
}

/** `body` with `options` when they are given (absent fields take no bytes on the wire). */
function withOptions(body: WireMap, options: object | undefined): WireMap {
  if (options !== undefined) body.options = options;
  return body;
}

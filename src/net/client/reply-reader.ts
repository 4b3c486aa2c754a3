/**
 * The reader of one request's replies (client-call.ts sends the requests): error headers become
 * StrataErrors, results from an older epoch than one seen are dropped (docs/failover.md), the
 * parts of a large frame are reassembled (frame()) or handed over one by one (message(), for
 * get-streamed.ts), and messages of a reply stream are credited back as they are consumed, so
 * that the server never has more than its window (`w`) of them in flight to this reader.
 * A wait with no message for `serverProbeMs` checks that the server is still there
 * (server-probe.ts) and ends early, on the channel, only when nats-server says it is gone.
 */
import { StrataError } from "../../errors.js";
import { Reassembler } from "../wire/chunking.js";
import { decodeMap, type WireMap } from "../wire/wire-codec.js";
import { errorOfReply, timeoutError } from "../wire/wire-errors.js";
import type { Caller, Target } from "./client-call.js";
import type { Channel, Quiet } from "./client-transport.js";
import { serverGone, vanished } from "./server-probe.js";
import type { ClientLimits } from "../wire/net-limits.js";

/** Reads the replies that arrive on one request's channel (see the file comment). */
export class ReplyReader {
  /** Made when the first part arrives: most replies are one message. */
  private parts: Reassembler | undefined;
  private stream: string | undefined;
  private window = 1;
  private consumedCount = 0;
  private credited = 0;
  /** The check for a vanished server while a wait is quiet (made on the first wait that long). */
  private quiet: Quiet | undefined;
  private probing = false;

  constructor(
    private readonly caller: Caller,
    private readonly ch: Channel,
    private readonly target: Target,
    private readonly limits: ClientLimits,
  ) {}

  get channel(): Channel {
    return this.ch;
  }

  async frame(timeoutMs: number): Promise<WireMap> {
    for (;;) {
      const frame = await this.message(timeoutMs);
      if (frame.part === undefined) return frame;
      if (typeof frame.part !== "number" || !(frame.data instanceof Uint8Array)) throw new StrataError("CORRUPT", "malformed part in a reply");
      this.parts ??= new Reassembler(this.limits.replyBytesMax);
      const whole = this.parts.push(frame.part, frame.data, frame.last === true, frame.of as number | undefined);
      this.consumed();
      if (whole) return this.checked(decodeMap(whole, "a reassembled reply"));
    }
  }

  /** The next message as it is (a part is not reassembled nor credited: call consumed() once it is used). */
  async message(timeoutMs: number): Promise<WireMap> {
    const msg = await this.ch.next(timeoutMs, () => timeoutError(this.target.what, this.caller.limits.timeoutMs, this.target.write), this.quietCheck());
    const err = errorOfReply(msg, () => this.target.what);
    if (err) throw err;
    const frame = decodeMap(msg.data, "a reply");
    if (typeof frame.s === "string") {
      this.stream = frame.s;
      if (typeof frame.w === "number" && frame.w >= 1) this.window = frame.w;
    }
    return this.checked(frame);
  }

  private quietCheck(): Quiet | undefined {
    const everyMs = this.limits.serverProbeMs;
    if (everyMs <= 0) return undefined;
    return (this.quiet ??= { everyMs, onQuiet: () => this.probe(everyMs) });
  }

  /** Pings the server (one ping at a time); if it is gone, the wait ends with `vanished()`. */
  private probe(waitMs: number): void {
    if (this.probing) return;
    this.probing = true;
    void serverGone(this.caller.transport, this.target.subject, waitMs).then((gone) => {
      this.probing = false;
      if (gone) this.ch.fail(vanished(this.target));
    });
  }

  /** `frame`, unless it comes from an older epoch than one seen (a server that lost the location). */
  checked(frame: WireMap): WireMap {
    if (typeof frame.e === "number" && !this.caller.sawEpoch(this.target.location, frame.e)) throw staleEpoch(this.target);
    return frame;
  }

  /** One message of the reply stream was consumed; grant more credit every half window. */
  consumed(): void {
    if (this.stream === undefined) return;
    this.consumedCount += 1;
    if (this.consumedCount - this.credited >= Math.max(1, Math.floor(this.window / 2))) {
      this.credited = this.consumedCount;
      this.caller.credit(this.target.subject, this.ch, this.stream, this.consumedCount);
    }
  }

  cancel(): void {
    if (this.stream !== undefined) this.caller.credit(this.target.subject, this.ch, this.stream, undefined);
  }

  close(): void {
    this.ch.close();
  }

  /** Cancels the reply stream (if any), ends a wait for the next message, and closes. */
  abandon(): void {
    this.cancel();
    this.ch.fail(new StrataError("CLOSED", `the read of ${this.target.what} was abandoned`));
    this.ch.close();
  }
}

function staleEpoch(target: Target): StrataError {
  if (target.write) {
    return new StrataError("TIMEOUT", `the answer for ${target.what} came from a server that no longer holds the location (an older epoch); the write may or may not be applied (use msgId on appends to retry exactly once)`);
  }
  return new StrataError("UNAVAILABLE", `the answer for ${target.what} came from a server that no longer holds the location (an older epoch); asking the current owner`);
}

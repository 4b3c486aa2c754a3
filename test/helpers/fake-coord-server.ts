/**
 * The server side of the coordinator protocol, played over a raw NATS connection, for coordinator
 * tests: it registers, renews (by hand or on a timer), sends claim/cut/confirm/release, and answers
 * `P.s.<id>.handover` as told. No Strata server code is involved, so these tests pin the wire
 * contract of docs/failover.md rather than one implementation of its server side.
 */
import type { NatsConnection, Subscription } from "nats";
import { encode } from "cbor-x";
import { StrataError } from "../../src/errors.js";
import {
  SERVER_HEADER,
  coordSubjects,
  decodeBody,
  handoverSubject,
  type HandoverReply,
  type HandoverRequest,
  type RegisterReply,
} from "../../src/net/wire/coordinator-protocol.js";
import { parseHandoverRequest, parseRegisterReply } from "../../src/net/wire/coordinator-parsers.js";
import { errorOfReply, errorHeaders } from "../../src/net/wire/wire-errors.js";

export interface Answer {
  body?: Record<string, unknown>;
  error?: StrataError;
  server?: string;
}

/** One request; a coded error reply becomes `error` (with the `Strata-Server` header as `server`). */
export async function ask(nc: NatsConnection, subject: string, body: unknown, timeout = 10_000): Promise<Answer> {
  const data = body instanceof Uint8Array ? body : encode(body);
  const reply = await nc.request(subject, data, { timeout });
  const error = errorOfReply(reply, () => subject);
  if (error) return { error, server: reply.headers?.get(SERVER_HEADER) || undefined };
  return { body: decodeBody(reply.data, "reply") as Record<string, unknown> };
}

/** The body of a successful answer, or the error thrown. */
export function ok(a: Answer): Record<string, unknown> {
  if (a.error) throw a.error;
  return a.body!;
}

export type HandoverAnswer = (req: HandoverRequest) => HandoverReply | "silent" | StrataError;

export interface FakeServer {
  readonly id: string;
  incarnation: number;
  lease: RegisterReply;
  /** Every handover request received. */
  readonly handovers: HandoverRequest[];
  /** How to answer handovers (default: let go of everything with cut 7). */
  onHandover: HandoverAnswer;
  register(): Promise<number>;
  renew(): Promise<Answer>;
  /** Renews every `ms` until stopRenewing (errors are recorded in `renewErrors`). */
  startRenewing(ms?: number): void;
  stopRenewing(): void;
  readonly renewErrors: StrataError[];
  claim(locations: string[]): Promise<Answer>;
  cut(location: string, epoch: number, from: string, cut: number): Promise<Answer>;
  confirm(epochs: Array<[string, number]>): Promise<Answer>;
  release(locations?: string[]): Promise<Answer>;
  stop(): Promise<void>;
}

export async function fakeServer(nc: NatsConnection, prefix: string, id: string, startedAt = Date.now()): Promise<FakeServer> {
  const s = coordSubjects(prefix);
  let timer: NodeJS.Timeout | undefined;
  const handovers: HandoverRequest[] = [];
  const renewErrors: StrataError[] = [];
  const sub: Subscription = nc.subscribe(handoverSubject(prefix, id), {
    callback: (_err, msg) => {
      const req = parseHandoverRequest(decodeBody(msg.data, "handover"));
      handovers.push(req);
      const answer = fake.onHandover(req);
      if (answer === "silent") return;
      if (answer instanceof StrataError) msg.respond(new Uint8Array(0), { headers: errorHeaders(answer) });
      else msg.respond(encode(answer));
    },
  });
  await nc.flush();
  const fake: FakeServer = {
    id,
    incarnation: 0,
    lease: { incarnation: 0, leaseMs: 0, leaseRenewMs: 0, leaseMarginMs: 0 },
    handovers,
    renewErrors,
    onHandover: (req) => ({ cuts: req.epochs.map(([l]) => [l, 7] as [string, number]) }),
    async register() {
      const reply = parseRegisterReply(ok(await ask(nc, s.register, { id, startedAt, load: { locations: 0 } })));
      fake.incarnation = reply.incarnation;
      fake.lease = reply;
      return reply.incarnation;
    },
    // A renewal that gets no answer must not stall the next one (a coordinator killed mid-request).
    renew: () => ask(nc, s.renew, { id, incarnation: fake.incarnation, load: {} }, Math.max(100, fake.lease.leaseRenewMs)),
    startRenewing(ms = fake.lease.leaseRenewMs) {
      const tick = async () => {
        const a = await fake.renew().catch((e: unknown) => ({ error: e as StrataError }));
        if (a.error) renewErrors.push(a.error);
        if (timer !== undefined) timer = setTimeout(() => void tick(), ms);
      };
      timer = setTimeout(() => void tick(), 0);
    },
    stopRenewing() {
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
    },
    claim: (locations) => ask(nc, s.claim, { id, incarnation: fake.incarnation, locations }),
    cut: (location, epoch, from, cut) => ask(nc, s.cut, { id, incarnation: fake.incarnation, location, epoch, from, cut }),
    confirm: (epochs) => ask(nc, s.confirm, { id, incarnation: fake.incarnation, epochs }),
    release: (locations) => ask(nc, s.release, { id, incarnation: fake.incarnation, ...(locations ? { locations } : {}) }),
    async stop() {
      fake.stopRenewing();
      if (!sub.isClosed()) sub.unsubscribe();
    },
  };
  return fake;
}

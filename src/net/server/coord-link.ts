/**
 * A persistence server's link to the coordinator (docs/failover.md): it registers (getting an
 * incarnation and the lease settings), renews its lease by request/reply every `leaseRenewMs`, and
 * carries the other requests a server makes (claim, cut, confirm, release).
 *
 * The lease: after each answered renewal the server may serve until (when it *sent* that renewal)
 * + leaseMs − leaseMarginMs on its monotonic clock (wire/lease.ts). It never extends the
 * lease on anything but an answered renewal, so a paused process, a lost connection or a silent
 * coordinator all end in an expired lease, on the server's own clock, strictly before the
 * coordinator reassigns anything. `FENCED` means the coordinator has ended this incarnation: the
 * link drops the lease at once, tells its owner (which forgets every grant), and registers again.
 *
 * Pushed grants (docs/failover.md, "Creation"): the link subscribes to `P.s.<id>.grant` before it
 * registers (on the same connection, so nats-server has the subscription before the coordinator
 * hears of the incarnation) and registers with `push`. A push is handed on only when it names the
 * current incarnation and carries that incarnation's `grantKey` (from the register reply, which
 * only this server's inbox receives); anything else — an old incarnation's push, a forged or
 * malformed one — is counted and ignored. Nothing depends on a push arriving: a request for a
 * location without a grant claims it.
 *
 * Nothing here throws out of a timer: a coordinator that is down or restarting is retried with the
 * one backoff (src/backoff.ts) while the server keeps serving what its lease still covers.
 */
import { timingSafeEqual } from "node:crypto";
import type { Msg, NatsConnection, Subscription } from "nats";
import { backoff } from "../../backoff.js";
import { StrataError } from "../../errors.js";
import type { Logger } from "../../logger.js";
import { parseGrantPush, parseOkReply, parseRegisterReply } from "../wire/coordinator-parsers.js";
import { coordSubjects, decodeBody, encodeBody, grantSubject, type LeaseTimes, type ServerLoad } from "../wire/coordinator-protocol.js";
import { leaseValidUntil } from "../wire/lease.js";
import { errorOfReply } from "../wire/wire-errors.js";

export interface CoordLinkOptions {
  prefix: string;
  id: string;
  startedAt: number;
  /** What the server reports about itself; called once per renewal, so it must be cheap. */
  load: () => ServerLoad;
  /** The incarnation ended (FENCED, or a new registration): forget every grant. */
  onIncarnationOver: () => void;
  /** A renewal was answered: the lease holds until at least its new end. */
  onRenewed?: () => void;
  /** Registered (a new incarnation) and holding its first lease; `first` for this process's first. */
  onRegistered?: (first: boolean) => void;
  logger: Logger;
  /** Coordinator requests that get no answer within this fail (retryable). */
  requestTimeoutMs: number;
  /** Retry delays while the coordinator cannot be reached. */
  retryMinMs: number;
  retryMaxMs: number;
}

export class CoordLink {
  private incarnationNo: number | undefined;
  private settings: LeaseTimes | undefined;
  /** Monotonic ms until which the lease holds; 0 = no lease. */
  private validUntil = 0;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private readonly subjects;
  private readonly retry;
  private registered: Promise<void> | undefined;
  private registrations = 0;
  private wakeRegistered: (() => void) | undefined;
  /** The current incarnation's key for pushed grants (undefined: none accepted). */
  private grantKey: Buffer | undefined;
  private grantSub: Subscription | undefined;
  private grantHandler: ((grants: Array<[string, number]>) => void) | undefined;
  /** Pushes ignored: malformed, for another incarnation, or without this incarnation's key. */
  pushesIgnored = 0;

  constructor(
    private readonly nc: NatsConnection,
    private readonly opts: CoordLinkOptions,
  ) {
    this.subjects = coordSubjects(opts.prefix);
    this.retry = backoff({ initialMs: opts.retryMinMs, maxMs: opts.retryMaxMs });
  }

  /** Starts registering and renewing in the background (after subscribing to pushed grants). */
  start(): void {
    const subject = grantSubject(this.opts.prefix, this.opts.id);
    this.grantSub = this.nc.subscribe(subject, {
      callback: (err, msg) => {
        if (err) {
          this.opts.logger.warn(
            { event: "grant_subscription_failed", subject, error: err.message },
            `cannot receive pushed grants on ${subject} (${err.message}): each new location costs an extra request to the coordinator; allow this server's NATS user to subscribe to "${this.opts.prefix}.s.*.grant" (deploy/README.md)`,
          );
          return;
        }
        this.onPush(msg);
      },
    });
    this.registered = new Promise((resolve) => (this.wakeRegistered = resolve));
    this.schedule(0);
  }

  /** Where the grants pushed for the current incarnation go (one handler: the server's Ownership). */
  onGrants(handler: (grants: Array<[string, number]>) => void): void {
    this.grantHandler = handler;
  }

  private onPush(msg: Msg): void {
    let push;
    try {
      push = parseGrantPush(decodeBody(msg.data, "grant push"));
    } catch {
      this.pushesIgnored += 1;
      return;
    }
    const key = this.grantKey;
    const sent = Buffer.from(push.key);
    if (this.stopped || push.incarnation !== this.incarnationNo || key === undefined || sent.length !== key.length || !timingSafeEqual(sent, key)) {
      this.pushesIgnored += 1;
      return;
    }
    this.grantHandler?.(push.grants);
  }

  /** The current incarnation, if registered. */
  get incarnation(): number | undefined {
    return this.incarnationNo;
  }

  /** Whether the lease holds now (checked before every answer a server gives). */
  valid(): boolean {
    return this.validUntil > performance.now();
  }

  /** Monotonic ms left on the lease (0 when none). */
  remainingMs(): number {
    return Math.max(0, this.validUntil - performance.now());
  }

  /** Resolves once registered (or at once when already). */
  whenRegistered(): Promise<void> {
    return this.registered ?? Promise.resolve();
  }

  /**
   * A request to the coordinator on `P.coord.<name>` carrying this server's id and incarnation:
   * the decoded reply, or a StrataError (UNAVAILABLE when unreachable; FENCED ends the incarnation).
   */
  async request(subject: "claim" | "cut" | "confirm" | "release", body: Record<string, unknown>): Promise<unknown> {
    const incarnation = this.incarnationNo;
    if (incarnation === undefined) throw new StrataError("UNAVAILABLE", `server "${this.opts.id}" is not registered with the coordinator yet; retry shortly`);
    try {
      return await this.call(this.subjects[subject], { ...body, id: this.opts.id, incarnation });
    } catch (err) {
      // The incarnation is over: forget every grant now rather than at the next renewal.
      if (StrataError.is(err, "FENCED") && this.incarnationNo === incarnation) this.endIncarnation();
      throw StrataError.is(err, "FENCED") ? new StrataError("UNAVAILABLE", `this server's lease ended (${err.message}); retry`) : err;
    }
  }

  /** Stops renewing; with `release`, tells the coordinator this incarnation lets go of everything. */
  async stop(release: boolean): Promise<void> {
    this.stopped = true;
    this.grantKey = undefined;
    if (this.grantSub !== undefined && !this.grantSub.isClosed()) this.grantSub.unsubscribe();
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const incarnation = this.incarnationNo;
    this.validUntil = 0;
    if (release && incarnation !== undefined && !this.nc.isClosed()) {
      try {
        await this.call(this.subjects.release, { id: this.opts.id, incarnation });
      } catch (err) {
        this.opts.logger.warn({ event: "lease_release_failed", incarnation, error: (err as Error).message }, `could not release the lease at the coordinator (${(err as Error).message}); its locations move once the lease runs out`);
      }
    }
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => void this.tick(), ms);
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    if (this.stopped || this.nc.isClosed()) return;
    try {
      if (this.incarnationNo === undefined) await this.register();
      else await this.renew();
      this.retry.reset();
      this.schedule(this.settings!.leaseRenewMs);
    } catch (err) {
      if (StrataError.is(err, "FENCED")) {
        this.opts.logger.warn({ event: "incarnation_fenced", incarnation: this.incarnationNo, error: err.message }, `the coordinator ended incarnation ${this.incarnationNo} of this server (${err.message}); it stops serving and registers again`);
        this.endIncarnation();
        this.schedule(0);
        return;
      }
      // Unreachable or refusing: try again soon; the lease runs out on its own meanwhile.
      const wait = Math.min(this.retry.next(), this.settings ? this.settings.leaseRenewMs : Infinity);
      this.schedule(wait);
    }
  }

  private async register(): Promise<void> {
    const reply = parseRegisterReply(await this.call(this.subjects.register, { id: this.opts.id, startedAt: this.opts.startedAt, load: this.safeLoad(), push: true }));
    // Any grant of an earlier incarnation is void now.
    if (this.incarnationNo !== undefined) this.endIncarnation();
    this.settings = { leaseMs: reply.leaseMs, leaseRenewMs: reply.leaseRenewMs, leaseMarginMs: reply.leaseMarginMs };
    this.incarnationNo = reply.incarnation;
    this.grantKey = reply.grantKey === undefined ? undefined : Buffer.from(reply.grantKey);
    // Registration is no lease: the first renewal grants one.
    await this.renew();
    this.opts.logger.info({ event: "registered", incarnation: reply.incarnation, leaseMs: reply.leaseMs }, `registered with the coordinator as incarnation ${reply.incarnation} (lease ${reply.leaseMs} ms)`);
    this.wakeRegistered?.();
    this.opts.onRegistered?.(this.registrations++ === 0);
  }

  private async renew(): Promise<void> {
    const sentAt = performance.now();
    // A renewal that hangs must not hold up the next one past the renew interval.
    const timeoutMs = Math.min(this.opts.requestTimeoutMs, this.settings!.leaseRenewMs);
    parseOkReply(await this.call(this.subjects.renew, { id: this.opts.id, incarnation: this.incarnationNo, load: this.safeLoad() }, timeoutMs), "renew reply");
    const s = this.settings!;
    this.validUntil = Math.max(this.validUntil, leaseValidUntil(sentAt, s.leaseMs, s.leaseMarginMs));
    this.opts.onRenewed?.();
  }

  private endIncarnation(): void {
    this.validUntil = 0;
    this.incarnationNo = undefined;
    this.grantKey = undefined;
    this.opts.onIncarnationOver();
  }

  private safeLoad(): ServerLoad {
    try {
      return this.opts.load();
    } catch {
      return {};
    }
  }

  private async call(subject: string, body: Record<string, unknown>, timeoutMs = this.opts.requestTimeoutMs): Promise<unknown> {
    let msg;
    try {
      msg = await this.nc.request(subject, encodeBody(body), { timeout: timeoutMs });
    } catch (err) {
      throw new StrataError("UNAVAILABLE", `the coordinator did not answer on ${subject}: ${(err as Error).message}`, { cause: err });
    }
    const err = errorOfReply(msg, () => `the coordinator (${subject})`);
    if (err) throw err;
    return decodeBody(msg.data, `the coordinator's reply on ${subject}`);
  }
}

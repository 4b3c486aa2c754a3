/**
 * A model test of the lease/epoch rules with a simulated clock: at no simulated instant may two
 * incarnations both be able to acknowledge a write for one location.
 *
 * The coordinator side is the production code's pure part: LeaseTable (coord/leases.ts) and the
 * per-location rules (coord/location-rules.ts), driven the way coordinator-handlers.ts drives them
 * (locate moves a location whose holder can act no more; claim grants, refuses or moves). The
 * server side is the rule of wire/lease.ts: a server may ack while it holds a grant of its current
 * incarnation and its own clock reads before leaseValidUntil(sent time of the last renewal or
 * registration answered ok). A new location is granted by locate to its live server's current
 * incarnation at once and the grant pushed to it (delayed or lost like any message; the server
 * takes it only for its current incarnation and a location it holds no grant for), as
 * coordinator-client-handlers.ts and ownership.ts do. Faults: servers die and come back as new incarnations, pause (stop
 * renewing for a while), release; messages are delayed (0..250 ms) or lost; the coordinator
 * restarts (its lease table is rebuilt from the durable incarnations, everyone renewed "now"); each
 * process's clock runs at its own rate within ±ρ of real time.
 *
 * "Able to ack" only ever starts at an event (a reply arriving), so checking after every event
 * checks every instant. Teeth: the same search with leaseMarginMs 0 and skewed clocks must find a
 * split brain (second test), so the property is not vacuous.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { mulberry32 as prng } from "../../src/random.js";
import { pickServer } from "../../src/net/coord/coordinator-placement.js";
import { LeaseTable } from "../../src/net/coord/leases.js";
import { claim, created, createdGranted, holderState, movedTo, sourceAfter, type Assignment } from "../../src/net/coord/location-rules.js";
import type { LeaseTimes } from "../../src/net/wire/coordinator-protocol.js";
import { leaseValidUntil } from "../../src/net/wire/lease.js";

const IDS = ["a", "b", "c"] as const;
const LOCS = ["L1", "L2"] as const;

type OpKind = "register" | "pause" | "claim" | "locate" | "release" | "die" | "coordRestart";

interface Op {
  dt: number;
  kind: OpKind;
  server: number;
  loc: number;
  d1: number;
  d2: number;
  lost1: boolean;
  lost2: boolean;
  down: number;
}

interface Scenario {
  coordRate: number;
  rates: number[];
  offsets: number[];
  ops: Op[];
  /** Seeds the delays and losses of the servers' own renewals. */
  seed: number;
}

function scenarioArb(rho: number): fc.Arbitrary<Scenario> {
  // Extreme rates are the interesting ones, so they are drawn often.
  const rate = fc.oneof(fc.constantFrom(1 - rho, 1, 1 + rho), fc.double({ min: 1 - rho, max: 1 + rho, noNaN: true }));
  const op = fc.record({
    dt: fc.oneof(fc.integer({ min: 0, max: 150 }), fc.integer({ min: 0, max: 1500 })),
    kind: fc.constantFrom<OpKind>("register", "pause", "pause", "claim", "claim", "claim", "locate", "locate", "release", "die", "coordRestart"),
    server: fc.integer({ min: 0, max: IDS.length - 1 }),
    loc: fc.integer({ min: 0, max: LOCS.length - 1 }),
    d1: fc.integer({ min: 0, max: 250 }),
    d2: fc.integer({ min: 0, max: 250 }),
    lost1: fc.integer({ min: 0, max: 9 }).map((n) => n < 2),
    lost2: fc.integer({ min: 0, max: 9 }).map((n) => n < 2),
    down: fc.integer({ min: 0, max: 1000 }),
  });
  return fc.record({
    coordRate: rate,
    rates: fc.array(rate, { minLength: IDS.length, maxLength: IDS.length }),
    offsets: fc.array(fc.integer({ min: 0, max: 100_000 }), { minLength: IDS.length, maxLength: IDS.length }),
    ops: fc.array(op, { minLength: 30, maxLength: 150 }),
    seed: fc.integer(),
  });
}

interface Server {
  id: string;
  rate: number;
  offset: number;
  alive: boolean;
  inc?: number;
  validUntil: number;
  grants: Map<string, number>;
  /** Real time until which it sends nothing (SIGSTOP). */
  pausedUntil: number;
}

/** Runs one scenario; returns a description of the first split brain, or undefined. */
export const modelStats = { grants: 0, moves: 0, runs: 0 };
let BROKEN_RESTART = false;
const TRACE: string[] | undefined = process.env.MODEL_TRACE ? [] : undefined;
function simulate(sc: Scenario, times: LeaseTimes): string | undefined {
  modelStats.runs++;
  let now = 0;
  let seq = 0;
  const queue: Array<{ at: number; seq: number; run: () => void }> = [];
  const at = (t: number, run: () => void) => {
    queue.push({ at: t, seq: seq++, run });
    queue.sort((x, y) => x.at - y.at || x.seq - y.seq);
  };

  // ── coordinator (durable: assign, incarnations, next; volatile: leases, up)
  const assign = new Map<string, Assignment>();
  const incarnations = new Map<string, number>();
  /** Durable: current incarnations a location was moved away from (coordinator-state `over`). */
  const ended = new Set<string>();
  let next = 1;
  let up = true;
  let coordOffset = 0;
  const cnow = () => coordOffset + sc.coordRate * now;
  let leases = new LeaseTable(times, cnow(), []);
  const place = (loc: string, t: number): string | undefined => {
    const candidates = IDS.filter((id) => leases.isLive(id, t)).map((id) => ({ id, assigned: [...assign.values()].filter((a) => a.server === id).length }));
    return candidates.length === 0 ? undefined : pickServer(loc, candidates);
  };
  const moveIfFree = (loc: string, a: Assignment, t: number): Assignment => {
    if (holderState(a, leases, t).kind !== "free") return a;
    const target = place(loc, t);
    if (target === undefined) return a;
    const moved = movedTo(a, target, sourceAfter(a));
    if (!BROKEN_RESTART && a.incarnation > 0 && incarnations.get(a.server) === a.incarnation) ended.add(a.server);
    TRACE?.push(`${now.toFixed(0)} move ${loc} ${a.server}#${a.incarnation}e${a.epoch} -> ${target}`);
    modelStats.moves++;
    assign.set(loc, moved);
    return moved;
  };

  // ── servers
  const servers: Server[] = IDS.map((id, i) => ({ id, rate: sc.rates[i]!, offset: sc.offsets[i]!, alive: true, validUntil: -Infinity, grants: new Map(), pausedUntil: -Infinity }));
  const local = (s: Server) => s.offset + s.rate * now;
  const reset = (s: Server) => {
    s.inc = undefined;
    s.validUntil = -Infinity;
    s.grants.clear();
  };

  /** A request from `s` reaching the coordinator after d1 and its reply reaching `s` after d2. */
  const send = (s: Server, op: Op, handle: () => unknown, onReply: (reply: unknown) => void) => {
    if (op.lost1) return;
    at(now + op.d1, () => {
      if (!up) return;
      const reply = handle();
      if (op.lost2) return;
      at(now + op.d2, () => {
        if (s.alive) onReply(reply);
      });
    });
  };

  const violation = (): string | undefined => {
    for (const loc of LOCS) {
      const able = servers.filter((s) => s.alive && s.inc !== undefined && s.grants.has(loc) && local(s) < s.validUntil);
      if (able.length > 1) return `t=${now}: ${loc} ackable by ${able.map((s) => `${s.id}#${s.inc}@epoch${s.grants.get(loc)}`).join(" and ")}`;
    }
    return undefined;
  };

  let t = 0;
  for (const op of sc.ops) {
    t += op.dt;
    at(t, () => {
      const s = servers[op.server]!;
      const loc = LOCS[op.loc]!;
      switch (op.kind) {
        case "coordRestart": {
          if (!up) return;
          up = false;
          at(now + op.down, () => {
            coordOffset = cnow() + 50_000; // a new process: an unrelated monotonic origin
            leases = new LeaseTable(times, cnow(), [...incarnations].map(([id, inc]) => [id, inc, ended.has(id)] as const));
            TRACE?.push(`${now.toFixed(0)} coordinator restarted ${JSON.stringify([...incarnations])}`);
            up = true;
          });
          return;
        }
        case "locate": {
          at(now + op.d1, () => {
            if (!up) return;
            const a = assign.get(loc);
            if (a === undefined) {
              const cn = cnow();
              const target = place(loc, cn);
              if (target === undefined) return;
              const inc = incarnations.get(target);
              if (inc === undefined || !leases.isCurrent(target, inc, cn)) {
                assign.set(loc, created(target));
                return;
              }
              // Granted in the placing decision, and the grant pushed to the server.
              const granted = createdGranted(target, inc, leases, cn);
              assign.set(loc, granted);
              TRACE?.push(`${now.toFixed(0)} locate grants ${loc} ${target}#${inc} e${granted.epoch}`);
              const holder = servers.find((x) => x.id === target)!;
              if (op.lost2) return;
              at(now + op.d2, () => {
                if (!holder.alive || holder.inc !== inc || holder.grants.has(loc)) return;
                holder.grants.set(loc, granted.epoch);
                modelStats.grants++;
              });
            } else {
              moveIfFree(loc, a, cnow());
            }
          });
          return;
        }
        case "die": {
          if (s.alive) {
            s.alive = false;
            reset(s);
          } else {
            s.alive = true; // restarted: it registers anew
          }
          return;
        }
        default:
          break;
      }
      if (!s.alive || now < s.pausedUntil) return;
      if (op.kind === "pause") {
        s.pausedUntil = now + op.down * 2;
        return;
      }
      if (op.kind === "register" || s.inc === undefined) {
        register(s, op);
        return;
      }
      const inc = s.inc;
      if (op.kind === "release") {
        // A stopping server stops acting first, then tells the coordinator.
        reset(s);
        send(s, op, () => leases.release(s.id, inc, cnow()), () => undefined);
      } else if (op.kind === "claim") {
        sendClaim(s, op, inc, loc);
      }
    });
  }

  const sendClaim = (s: Server, op: Op, inc: number, loc: string) => {
    send(
      s,
      op,
      () => {
        const cn = cnow();
        if (!leases.isCurrent(s.id, inc, cn)) return "fenced";
        let a = assign.get(loc);
        if (a === undefined) {
          a = created(s.id);
          assign.set(loc, a);
        } else if (a.server !== s.id) {
          a = moveIfFree(loc, a, cn);
        }
        const o = claim(a, s.id, inc, leases, cn, () => "");
        if (o.kind === "refuse") return "refused";
        assign.set(loc, o.next);
        TRACE?.push(`${now.toFixed(0)} grant ${loc} ${s.id}#${inc} e${o.next.epoch} (cnow ${cn.toFixed(0)})`);
        return o.next.epoch;
      },
      (r) => {
        if (s.inc !== inc) return;
        if (r === "fenced") reset(s);
        else if (typeof r === "number") {
          s.grants.set(loc, r);
          modelStats.grants++;
        }
      },
    );
  };

  const register = (s: Server, op: Op) => {
    const sentAt = local(s);
    send(
      s,
      op,
      () => {
        const inc = next++;
        incarnations.set(s.id, inc);
        ended.delete(s.id);
        leases.register(s.id, inc, cnow());
        TRACE?.push(`${now.toFixed(0)} register ${s.id}#${inc}`);
        return inc;
      },
      (inc) => {
        if (s.inc !== undefined && s.inc >= (inc as number)) return;
        reset(s);
        s.inc = inc as number;
        s.validUntil = leaseValidUntil(sentAt, times.leaseMs, times.leaseMarginMs);
      },
    );
  };

  // Each server's own timer: every leaseRenewMs of ITS clock it renews (or registers when it has
  // no incarnation), unless dead or paused; delays and losses come from the seeded PRNG.
  const random = prng(sc.seed);
  const timerOp = (): Op => ({ dt: 0, kind: "register", server: 0, loc: 0, d1: Math.floor(random() * 250), d2: Math.floor(random() * 250), lost1: random() < 0.1, lost2: random() < 0.1, down: 0 });
  for (const s of servers) {
    const tick = () => {
      if (now > t + 2000) return;
      at(now + times.leaseRenewMs / s.rate, tick);
      if (!s.alive || now < s.pausedUntil) return;
      const op = timerOp();
      if (s.inc === undefined) {
        register(s, op);
        return;
      }
      const inc = s.inc;
      const sentAt = local(s);
      // Clients keep sending requests, so a server keeps claiming what it is asked for.
      if (random() < 0.5) sendClaim(s, timerOp(), inc, LOCS[Math.floor(random() * LOCS.length)]!);
      send(s, op, () => { const r = leases.renew(s.id, inc, cnow()); TRACE?.push(`${now.toFixed(0)} renew ${s.id}#${inc} ${r} sent@${sentAt.toFixed(0)}`); return r; }, (r) => {
        if (s.inc !== inc) return;
        TRACE?.push(`${now.toFixed(0)} renew reply ${s.id}#${inc} ${r} validUntil(local) ${Math.max(s.validUntil, leaseValidUntil(sentAt, times.leaseMs, times.leaseMarginMs)).toFixed(0)} local now ${local(s).toFixed(0)}`);
        if (r === "ok") s.validUntil = Math.max(s.validUntil, leaseValidUntil(sentAt, times.leaseMs, times.leaseMarginMs));
        else reset(s);
      });
    };
    at(random() * times.leaseRenewMs, tick);
  }

  while (queue.length > 0) {
    const e = queue.shift()!;
    now = e.at;
    e.run();
    const v = violation();
    if (v !== undefined) {
      if (TRACE) console.log(TRACE.join("\n"));
      return v;
    }
  }
  if (TRACE) TRACE.length = 0;
  return undefined;
}

const TIMES: LeaseTimes = { leaseMs: 600, leaseRenewMs: 120, leaseMarginMs: 120 };

describe("lease/epoch model", () => {
  it("never lets two incarnations ack for one location (skew within margin/lease)", () => {
    const rho = (TIMES.leaseMarginMs / TIMES.leaseMs) * 0.95;
    fc.assert(
      fc.property(scenarioArb(rho), (sc) => {
        const v = simulate(sc, TIMES);
        if (v !== undefined) throw new Error(v);
      }),
      { numRuns: 1000 },
    );
  });

  it("has teeth: with no margin and skewed clocks it finds a split brain", () => {
    const broken: LeaseTimes = { ...TIMES, leaseMarginMs: 0 };
    const result = fc.check(
      fc.property(scenarioArb(0.2), (sc) => simulate(sc, broken) === undefined),
      { numRuns: 5000, endOnFailure: true },
    );
    expect(result.failed).toBe(true);
  });

  it("has teeth: a coordinator restart that revives an ended incarnation gives a split brain", () => {
    BROKEN_RESTART = true;
    try {
      const result = fc.check(
        fc.property(scenarioArb((TIMES.leaseMarginMs / TIMES.leaseMs) * 0.95), (sc) => simulate(sc, TIMES) === undefined),
        { numRuns: 3000, endOnFailure: true },
      );
      expect(result.failed).toBe(true);
    } finally {
      BROKEN_RESTART = false;
    }
  });
});

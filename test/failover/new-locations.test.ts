/**
 * Failover scenario for locations created through a pushed grant (docs/failover.md, "Creation"):
 * new locations get their first writes without a single claim (the grant came with the locate),
 * then the server holding most of them is killed with SIGKILL.
 * Asserts: each of its locations moves to the live server with a higher epoch (a takeover, since
 * the dead incarnation held the grant and may have written), every write acknowledged at "object"
 * before the kill is read back there in order, and the location takes new writes.
 */
import { afterAll, beforeAll, expect, it } from "vitest";
import { startCluster, type Cluster } from "../../src/testing/cluster.js";
import { busiest, heldBy, locateAll } from "../helpers/failover-workload.js";
import { diagnoseOnFailure, LEASE_MS, SEAL_MS } from "./run.js";

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

let cluster: Cluster;
beforeAll(async () => {
  cluster = await startCluster({ servers: 2, leaseMs: LEASE_MS, sealIntervalMs: SEAL_MS });
});
afterAll(async () => {
  await cluster?.stop();
});

it("a location created through a pushed grant is taken over after its server dies, with every object-acked write", async () => {
  diagnoseOnFailure(cluster);
  const watcher = await cluster.connect();
  let claims = 0;
  watcher.subscribe(`${cluster.prefix}.coord.claim`, { callback: () => void (claims += 1) });
  await watcher.flush();
  const client = await cluster.client({ timeoutMs: 20_000 });

  const locations = Array.from({ length: 24 }, (_, i) => `acct/created/l${i}`);
  await Promise.all(
    locations.map(async (l) => {
      for (let k = 1; k <= 3; k++) expect((await client.stream(l).append({ value: enc(`${l}#${k}`) }, { ack: "object", msgId: `${l}#${k}` })).seq).toBe(k);
    }),
  );
  await watcher.flush();
  expect(claims, "new locations are granted by locate and pushed, never claimed").toBe(0);

  const before = await locateAll(cluster, locations);
  for (const l of locations) expect(before.get(l)).toMatchObject({ epoch: 1 });
  const victimId = busiest(before);
  const moved = heldBy(before, victimId);
  expect(moved.length).toBeGreaterThan(0);
  await cluster.server(victimId).kill9();

  // The client retries until the location has moved (lease + margin) and been taken over.
  await Promise.all(moved.map(async (l) => expect((await client.stream(l).append({ value: enc(`${l}#4`) }, { ack: "object", msgId: `${l}#4` })).seq).toBe(4)));
  const after = await locateAll(cluster, locations);
  for (const l of locations) {
    const was = before.get(l) as { server: string; epoch: number };
    const now = after.get(l) as { server: string; epoch: number };
    if (moved.includes(l)) {
      expect(now.server, l).not.toBe(victimId);
      expect(now.epoch, l).toBeGreaterThan(was.epoch);
    } else {
      expect(now, l).toEqual(was);
    }
  }
  for (const l of moved) {
    const values: string[] = [];
    for await (const m of client.stream(l).getAll()) values.push(dec(m.value));
    expect(values, l).toEqual([1, 2, 3, 4].map((k) => `${l}#${k}`));
  }
});

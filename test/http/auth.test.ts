/**
 * Bearer-token auth of the gateway, through real HTTP against a real deployment: a missing,
 * malformed or unknown token is 401 with WWW-Authenticate, a token without a grant for the
 * location and access is 403, and either touches nothing: a subscription on the deployment's
 * request subjects sees no message while they are refused (and sees the one allowed call that
 * follows, so the check can fail). Also: the tokens file's checks, grant prefixes by whole
 * segments, and the refusal to start without --tokens unless --no-auth is explicit.
 */
import fs from "node:fs";
import path from "node:path";
import type { Subscription } from "nats";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { prefixMatches, TokenTable } from "../../src/http/auth.js";
import { startGateway } from "../../src/http/gateway.js";
import { loc, startGatewayStack, TOKEN_DOC, TOKENS, type GatewayStack } from "./gateway-stack.js";

let g: GatewayStack;
let requests: Subscription;
let seen: string[];
beforeAll(async () => {
  g = await startGatewayStack();
  seen = [];
  requests = g.stack.nc.subscribe("strata.*.s1.>", { callback: (_err, msg) => seen.push(msg.subject) });
  await g.stack.nc.flush();
});
afterAll(async () => {
  requests?.unsubscribe();
  await g?.stop();
});

const refusedCalls: Array<[string, string, RequestInit?]> = [
  ["PUT", `/kv/${loc("acct/alice/cfg")}/k`, { body: "v" }],
  ["DELETE", `/kv/${loc("acct/alice/cfg")}/k`],
  ["POST", `/streams/${loc("acct/alice/chat")}`, { body: "m" }],
  ["DELETE", `/streams/${loc("acct/alice/chat")}`],
  ["DELETE", `/streams/${loc("acct/alice/chat")}/1`],
  ["GET", `/kv/${loc("acct/alice/cfg")}/k`],
  ["GET", `/kv/${loc("acct/alice/cfg")}`],
  ["GET", `/streams/${loc("acct/alice/chat")}`],
  ["GET", `/streams/${loc("acct/alice/chat")}/1`],
  ["GET", `/streams/${loc("acct/alice/chat")}/watch`],
];

describe("gateway auth", () => {
  it("answers 401 with WWW-Authenticate to a missing, malformed or unknown token, and sends nothing to the deployment", async () => {
    const cases: Array<[string | null, RegExp]> = [
      [null, /^Bearer realm="strata"$/],
      ["Basic dXNlcjpwYXNz", /error="invalid_request"/],
      ["Bearer", /error="invalid_request"/],
      [`Bearer ${TOKENS.admin}x`, /error="invalid_token"/],
      [`Bearer ${TOKENS.admin.slice(0, -1)}`, /error="invalid_token"/],
      ["Bearer a b", /error="invalid_request"/],
    ];
    for (const [authorization, challenge] of cases) {
      for (const [method, p, init] of refusedCalls) {
        const headers: Record<string, string> = authorization === null ? {} : { authorization };
        const r = await g.call(p, { ...init, method, token: null, headers });
        expect(r.status, `${method} ${p} with ${authorization}`).toBe(401);
        expect(r.headers.get("www-authenticate")).toMatch(challenge);
        expect(((await r.json()) as { code: string }).code).toBe("UNAUTHORIZED");
      }
    }
    await g.stack.nc.flush();
    expect(seen).toEqual([]);
    expect(g.stack.store.inventory("acct/alice/cfg").revision).toBe(0);
    expect(g.stack.store.inventory("acct/alice/chat").revision).toBe(0);
  });

  it("answers 403 to a token without a grant for the location or the access, and sends nothing to the deployment", async () => {
    const writes = refusedCalls.filter(([m]) => m !== "GET");
    for (const [method, p, init] of writes) {
      const r = await g.call(p, { ...init, method, token: TOKENS.aliceRead });
      expect(r.status, `${method} ${p} read-only`).toBe(403);
      expect(((await r.json()) as { code: string }).code).toBe("FORBIDDEN");
    }
    for (const location of ["acct/bob/cfg", "acct/alicex", "acct", "acct/alic"]) {
      for (const method of ["GET", "PUT"]) {
        const r = await g.call(`/kv/${loc(location)}/k`, { method, token: TOKENS.alice, ...(method === "PUT" ? { body: "v" } : {}) });
        expect(r.status, `${method} ${location}`).toBe(403);
      }
    }
    await g.stack.nc.flush();
    expect(seen).toEqual([]);

    // The monitor does see what passes: the check above could fail.
    const ok = await g.call(`/kv/${loc("acct/alice/cfg")}/k`, { method: "PUT", body: "v", token: TOKENS.alice });
    expect(ok.status).toBe(200);
    const read = await g.call(`/kv/${loc("acct/alice/cfg")}/k`, { token: TOKENS.aliceRead });
    expect(await read.text()).toBe("v");
    await g.stack.nc.flush();
    expect(seen.length).toBeGreaterThanOrEqual(2);
  });

  it("serves /openapi.json and /healthz without a token", async () => {
    expect((await g.call("/openapi.json", { token: null })).status).toBe(200);
    expect(await (await g.call("/healthz", { token: null })).json()).toEqual({ ok: true });
  });

  it("grants match whole location segments", () => {
    expect(prefixMatches("acct/alice", "acct/alice")).toBe(true);
    expect(prefixMatches("acct/alice", "acct/alice/chat")).toBe(true);
    expect(prefixMatches("acct/alice", "acct/alicex")).toBe(false);
    expect(prefixMatches("acct/alice", "acct")).toBe(false);
    expect(prefixMatches("", "anything/at/all")).toBe(true);
  });

  it("checks the tokens file: JSON or YAML; short, duplicate or grantless tokens and bad rights are refused at start", async () => {
    const dir = await g.stack.tempDir("tokens");
    const json = path.join(dir, "tokens.json");
    fs.writeFileSync(json, JSON.stringify(TOKEN_DOC));
    expect(TokenTable.load(json).size).toBe(3);
    const yaml = path.join(dir, "tokens.yaml");
    fs.writeFileSync(yaml, `tokens:\n  - name: ci\n    token: "${TOKENS.admin}"\n    grants:\n      - { prefix: "ci/", rights: read }\n`);
    const table = TokenTable.load(yaml);
    expect(table.authenticate(`Bearer ${TOKENS.admin}`).grants).toEqual([{ prefix: "ci", rights: "read" }]);
    expect(() => table.authenticate(`Bearer ${TOKENS.alice}`)).toThrow(/unknown token/);

    const bad: Array<[unknown, RegExp]> = [
      [{}, /no tokens list/],
      [{ tokens: [] }, /no tokens list/],
      [{ tokens: [{ token: "short", grants: [{ prefix: "", rights: "read" }] }] }, /at least 16/],
      [{ tokens: [{ token: "has a space in it, long enough", grants: [{ prefix: "", rights: "read" }] }] }, /printable ASCII/],
      [{ tokens: [{ token: TOKENS.admin, grants: [] }] }, /grants must be a non-empty list/],
      [{ tokens: [{ token: TOKENS.admin, grants: [{ prefix: "", rights: "write" }] }] }, /"read" or "readwrite"/],
      [{ tokens: [{ token: TOKENS.admin, grants: [{ rights: "read" }] }] }, /prefix must be a string/],
      [{ tokens: [TOKEN_DOC.tokens[0], TOKEN_DOC.tokens[0]] }, /appears twice/],
    ];
    for (const [doc, why] of bad) expect(() => TokenTable.from(doc), JSON.stringify(doc)).toThrow(why);
    expect(() => TokenTable.load(path.join(dir, "missing.yaml"))).toThrow(/cannot read the tokens file/);
    const broken = path.join(dir, "broken.yaml");
    fs.writeFileSync(broken, "tokens: [ {");
    expect(() => TokenTable.load(broken)).toThrow(/neither JSON nor YAML/);
  });

  it("refuses to start without tokens unless no-auth is explicit; with no-auth it serves without a token", async () => {
    await expect(startGateway({ client: g.client, port: 0 })).rejects.toThrow(/--tokens FILE .* or --no-auth/);
    await expect(startGateway({ client: g.client, port: 0, noAuth: true, tokens: TokenTable.from(TOKEN_DOC) })).rejects.toThrow(/not both/);
    const open = await startGateway({ client: g.client, port: 0, noAuth: true });
    try {
      expect(open.host).toBe("127.0.0.1");
      const r = await fetch(`${open.url}/kv/${loc("acct/carol/cfg")}/k`, { method: "PUT", body: "v" });
      expect(r.status).toBe(200);
    } finally {
      await open.close();
    }
  });
});

/**
 * The set-up the gateway tests share: a real nats-server and a real standalone Strata server
 * (test/helpers/strata-stack.ts), a StrataClient pinned to it, and the gateway on a free loopback
 * port, with a token table of three tokens (read-write on acct/alice, read-only on acct/alice,
 * read-write everywhere). stop() ends them in reverse order.
 */
import type { Gateway } from "../../src/http/gateway.js";
import { startGateway } from "../../src/http/gateway.js";
import { TokenTable } from "../../src/http/auth.js";
import type { HttpLimits } from "../../src/http/http-limits.js";
import { StrataClient } from "../../src/net/client/client.js";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "nats";
import type { StrataClientOptions } from "../../src/net/client/client.js";
import { startNatsServer, type RunningNatsServer } from "../../src/testing/nats-server.js";
import { waitFor } from "../../src/testing/process.js";
import { startStack, type Stack } from "../helpers/strata-stack.js";
import { startChildServer, type ChildServer } from "../net/server-child.js";

export const TOKENS = {
  alice: "alice-readwrite-token-0123456789",
  aliceRead: "alice-readonly-token-0123456789",
  admin: "admin-readwrite-token-0123456789",
} as const;

export const TOKEN_DOC = {
  tokens: [
    { name: "alice", token: TOKENS.alice, grants: [{ prefix: "acct/alice", rights: "readwrite" }] },
    { name: "alice-read", token: TOKENS.aliceRead, grants: [{ prefix: "acct/alice/", rights: "read" }] },
    { name: "admin", token: TOKENS.admin, grants: [{ prefix: "", rights: "readwrite" }] },
  ],
};

export interface GatewayStack {
  stack: Stack;
  client: StrataClient;
  gateway: Gateway;
  /** fetch against the gateway, with `token` as bearer unless null. */
  call(path: string, init?: RequestInit & { token?: string | null }): Promise<Response>;
  stop(): Promise<void>;
}

export async function startGatewayStack(options: { limits?: Partial<HttpLimits>; clientTimeoutMs?: number } = {}): Promise<GatewayStack> {
  const stack = await startStack({ id: "s1" });
  const client = new StrataClient(stack.nc, { server: "s1", timeoutMs: options.clientTimeoutMs ?? 10_000 });
  let gateway: Gateway;
  try {
    gateway = await startGateway({ client, port: 0, tokens: TokenTable.from(TOKEN_DOC), ...(options.limits ? { limits: options.limits } : {}) });
  } catch (err) {
    client.close();
    await stack.stop();
    throw err;
  }
  const call = (path: string, init: RequestInit & { token?: string | null } = {}) => {
    const { token = TOKENS.admin, ...rest } = init;
    const headers = new Headers(rest.headers);
    if (token !== null) headers.set("authorization", `Bearer ${token}`);
    return fetch(`${gateway.url}${path}`, { ...rest, headers });
  };
  return {
    stack,
    client,
    gateway,
    call,
    stop: async () => {
      await gateway.close();
      client.close();
      await stack.stop();
    },
  };
}

/** "/kv/<location>/<key>" etc.: a location as one percent-encoded segment. */
export const loc = (location: string) => encodeURIComponent(location);
export const enc = (s: string) => new TextEncoder().encode(s);

export interface SseEvent {
  id?: string;
  event?: string;
  data: string;
}

/** The events of an SSE response as they arrive (comment lines skipped); cancel the body to end. */
export async function* sseEvents(response: Response): AsyncGenerator<SseEvent> {
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  try {
    for (;;) {
      let end: number;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const e: SseEvent = { data: "" };
        let any = false;
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const i = line.indexOf(": ");
          const [field, value] = i < 0 ? [line, ""] : [line.slice(0, i), line.slice(i + 2)];
          if (field === "id") e.id = value;
          else if (field === "event") e.event = value;
          else if (field === "data") e.data = value;
          any = true;
        }
        if (any) yield e;
      }
      const { done, value } = await reader.read();
      if (done) return;
      buffer += value;
    }
  } finally {
    await reader.cancel().catch(() => {});
  }
}

/** Polls `condition` every 10 ms until it holds or `ms` pass (then throws `what`): src/testing's waitFor. */
export async function until(condition: () => boolean | Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  await waitFor(what, condition, ms, 10);
}

export interface ChildGatewayStack {
  nats: RunningNatsServer;
  /** The strata server, in a child process of its own (its stats, stop and kill). */
  server: ChildServer;
  nc: NatsConnection;
  client: StrataClient;
  gateway: Gateway;
  /** Ends the gateway, client and connection, then the server with `endServer`, then nats-server, and removes the data directory. */
  stop(endServer: (server: ChildServer) => Promise<void>): Promise<void>;
}

/**
 * The gateway in front of a strata server in a child process, so that this process holds only the
 * gateway, its client and the HTTP reader (what the memory and stall tests measure), on a
 * nats-server with the given max_payload. The server keeps a stalled reply stream for a minute
 * (replyIdleMs), so only a cancel frees one within a test.
 */
export async function startChildGatewayStack(o: { id: string; maxPayload: number; client: Omit<StrataClientOptions, "server">; limits: Partial<HttpLimits> }): Promise<ChildGatewayStack> {
  const nats = await startNatsServer({ maxPayload: o.maxPayload });
  const dir = await mkdtemp(join(tmpdir(), `strata-gateway-${o.id}-`));
  const server = await startChildServer({ dir, url: nats.url, id: o.id, limits: { replyIdleMs: 60_000 } });
  const nc = await connect({ servers: nats.url });
  const client = new StrataClient(nc, { ...o.client, server: o.id });
  const gateway = await startGateway({ client, port: 0, tokens: TokenTable.from(TOKEN_DOC), limits: o.limits });
  return {
    nats,
    server,
    nc,
    client,
    gateway,
    stop: async (endServer) => {
      await gateway.close();
      client.close();
      await nc.close();
      await endServer(server);
      await nats.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

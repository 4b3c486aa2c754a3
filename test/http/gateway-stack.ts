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
import { startStack, type Stack } from "../helpers/strata-stack.js";

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

/** Polls `condition` every 10 ms until it holds or `ms` pass (then throws `what`). */
export async function until(condition: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

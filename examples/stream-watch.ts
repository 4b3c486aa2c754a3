/**
 * Writes, reads and watches a stream through StrataClient.
 *
 *   strata up                                   # or: nats-server + strata coordinator + strata server
 *   npx tsx examples/stream-watch.ts [nats://127.0.0.1:4222] [--server ID]
 *
 * Without --server the client asks the coordinator which server holds the location.
 */
import { connect } from "nats";
import { StrataClient } from "../src/mod.js";

const args = process.argv.slice(2);
const serverAt = args.indexOf("--server");
const server = serverAt >= 0 ? args.splice(serverAt, 2)[1] : undefined;
const url = args[0] ?? "nats://127.0.0.1:4222";
const text = new TextEncoder();
const show = (b: Uint8Array) => new TextDecoder().decode(b);

const nc = await connect({ servers: url });
const client = new StrataClient(nc, { timeoutMs: 5000, ...(server ? { server } : {}) });
const chat = client.stream(`examples/chat-${process.pid}`);

// Write: single appends and one batch (one request, one reply).
await chat.append({ value: text.encode("hello"), headers: { from: "alice" } });
await chat.appendMany([{ message: { value: text.encode("how are you?") } }, { message: { value: text.encode("fine") } }]);

// Read: one message, then all of them (streamed in batches with flow control).
const first = await chat.get(1);
console.log(`get(1): ${show(first!.value)} from ${first!.headers?.from}`);
for await (const m of chat.getAll()) console.log(`getAll: #${m.seq} ${show(m.value)}`);

// Watch: replays what exists, then follows live changes in commit order.
const watch = chat.watch({ startSeq: 2 });
const writer = (async () => {
  for (const word of ["live-1", "live-2", "live-3"]) await chat.append({ value: text.encode(word) });
})();
let seen = 0;
for await (const change of watch) {
  if (change.kind === "stream" && change.op === "set") console.log(`watch: rev ${change.revision} #${change.seq} ${show(change.message.value)}`);
  if (++seen === 5) break; // 2 replayed + 3 live; break stops the watch
}
await writer;

console.log("inventory:", await chat.inventory());
await chat.deleteAll();
client.close();
await nc.close();

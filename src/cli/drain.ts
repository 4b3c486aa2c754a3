/**
 * `strata drain SERVER --nats URL [--json]`: moves every location of SERVER to other live servers
 * (placed by weighted rendezvous hashing) and stops new locations from being placed on it until it
 * registers again. A live holder hands its locations over; a dead one is waited out (its lease).
 * Prints each moved location with its new server, then a count; exits 1 if some were left behind.
 */
import type { Command } from "commander";
import { parseDrainReply } from "../net/wire/coordinator-parsers.js";
import { DEFAULT_PREFIX, coordSubjects } from "../net/wire/coordinator-protocol.js";
import { addNatsFlags } from "./nats-flags.js";
import { OPERATOR_TIMEOUT_MS_DEFAULT, operatorRequest, type OperatorFlags } from "./operator-request.js";

export function register(program: Command): void {
  const command = program
    .command("drain")
    .description("move every location of a server to the other live servers")
    .argument("<server>", "id of the server to drain")
    .option("--prefix <prefix>", "subject prefix", DEFAULT_PREFIX)
    .option("--timeout-ms <ms>", "how long to wait for the coordinator (it may wait out a lease)", String(OPERATOR_TIMEOUT_MS_DEFAULT))
    .option("--json", "print the reply as JSON");
  addNatsFlags(command).action(async (server: string, flags: OperatorFlags) => {
    const reply = await operatorRequest(flags, coordSubjects(flags.prefix).drain, { server }, parseDrainReply);
    if (flags.json) {
      process.stdout.write(`${JSON.stringify({ server, ...reply })}\n`);
    } else {
      for (const [location, to] of reply.locations) process.stdout.write(`${location} -> ${to}\n`);
      const unlisted = reply.moved - reply.locations.length;
      process.stdout.write(`drained ${server}: ${reply.moved} moved${unlisted > 0 ? ` (${unlisted} not listed)` : ""}, ${reply.left} left\n`);
    }
    if (reply.left > 0) {
      process.stderr.write(`strata: ${reply.left} location(s) of ${server} were not handed over; run the drain again (a dead server's lease must run out first)\n`);
      process.exitCode = 1;
    }
  });
}

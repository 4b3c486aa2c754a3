/**
 * `strata move LOCATION --to SERVER --nats URL [--json]`: asks the coordinator to move one location
 * to another live server. The coordinator asks the current holder to hand it over (seal, ship, let
 * go), records where its history is, and assigns it to SERVER; clients follow on their next call.
 * Prints what moved (one line, or the reply as JSON with --json).
 */
import type { Command } from "commander";
import { parseMoveReply } from "../net/wire/coordinator-parsers.js";
import { DEFAULT_PREFIX, coordSubjects } from "../net/wire/coordinator-protocol.js";
import { addNatsFlags } from "./nats-flags.js";
import { OPERATOR_TIMEOUT_MS_DEFAULT, operatorRequest, type OperatorFlags } from "./operator-request.js";

interface MoveFlags extends OperatorFlags {
  to: string;
}

export function register(program: Command): void {
  const command = program
    .command("move")
    .description("move a location to another server (the holder hands it over first)")
    .argument("<location>", "the location, e.g. acct/alice/chat")
    .requiredOption("--to <server>", "id of the live server to move it to")
    .option("--prefix <prefix>", "subject prefix", DEFAULT_PREFIX)
    .option("--timeout-ms <ms>", "how long to wait for the coordinator (it may wait out a lease)", String(OPERATOR_TIMEOUT_MS_DEFAULT))
    .option("--json", "print the reply as JSON");
  addNatsFlags(command).action(async (location: string, flags: MoveFlags) => {
    const reply = await operatorRequest(flags, coordSubjects(flags.prefix).move, { location, to: flags.to }, parseMoveReply);
    if (flags.json) process.stdout.write(`${JSON.stringify({ location, ...reply })}\n`);
    else if (reply.from === reply.server) process.stdout.write(`${location} is already on ${reply.server} (epoch ${reply.epoch})\n`);
    else process.stdout.write(`moved ${location} from ${reply.from} to ${reply.server} (epoch ${reply.epoch}; the next grant bumps it)\n`);
  });
}

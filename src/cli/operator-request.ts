/**
 * One operator request to the coordinator (`strata move`, `strata drain`): connect with the usual
 * NATS flags, send one CBOR request, parse the reply with the wire parser, close the connection.
 * The request may take as long as a holder's lease when the coordinator has to wait one out, so
 * its timeout is generous and settable (--timeout-ms).
 */
import { connect } from "nats";
import { StrataError } from "../errors.js";
import { SERVER_HEADER, decodeBody, encodeBody } from "../net/wire/coordinator-protocol.js";
import { errorOfReply, fromNatsError } from "../net/wire/wire-errors.js";
import { natsOptions, type NatsFlags } from "./nats-flags.js";

export const OPERATOR_TIMEOUT_MS_DEFAULT = 60_000;

export interface OperatorFlags extends NatsFlags {
  prefix: string;
  timeoutMs: string;
  json?: boolean;
}

export async function operatorRequest<T>(flags: OperatorFlags, subject: string, body: unknown, parse: (body: unknown) => T): Promise<T> {
  const timeout = Number(flags.timeoutMs);
  if (!Number.isSafeInteger(timeout) || timeout <= 0) throw new StrataError("INVALID_ARGUMENT", `--timeout-ms must be a positive integer, got ${JSON.stringify(flags.timeoutMs)}`);
  const nc = await connect({ ...natsOptions(flags, "strata-operator"), maxReconnectAttempts: 0 });
  try {
    let msg;
    try {
      msg = await nc.request(subject, encodeBody(body), { timeout });
    } catch (err) {
      throw fromNatsError(err, `no answer from the coordinator on ${subject} (is it running with this --prefix?)`);
    }
    const error = errorOfReply(msg, () => `the coordinator (${subject})`);
    if (error) {
      const holder = msg.headers?.get(SERVER_HEADER);
      throw holder ? new StrataError(error.code, `${error.message} [server: ${holder}]`) : error;
    }
    return parse(decodeBody(msg.data, `the coordinator's reply on ${subject}`));
  } finally {
    await nc.close();
  }
}

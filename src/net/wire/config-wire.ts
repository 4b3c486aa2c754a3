/**
 * The body of a `stream.config` / `kv.config` request (per-location limits, docs/compaction.md
 * "Per-location limits"): `{ op, limits, options? }`, sent on the location's WRITE subject
 * (`P.w…`), so a user whom nats-server lets only read cannot change a location's limits.
 *
 * `limits` arrives from anyone who may write the location and is untrusted. Here we check only
 * its shape, before anything else looks at it: present, a plain CBOR map, and no more entries
 * than LocationLimits has fields (a map of many junk keys is refused after the first few).
 * What the fields mean (known names, integers in range, a field of the other kind, contradictory
 * values) is checked by the handle's `config`, exactly as in-process (validate.ts
 * `validateLocationLimits`), so the wire and in-process callers get the same INVALID_ARGUMENT.
 */
import { StrataError } from "../../errors.js";
import { LOCATION_LIMIT_FIELDS, describeValue } from "../../validate.js";
import { isPlainMap, type WireMap } from "./wire-codec.js";

/** The `limits` of a config request, shape-checked; the handle validates the fields. */
export function configLimitsUntrusted(value: unknown): WireMap {
  if (value === undefined) {
    throw new StrataError("INVALID_ARGUMENT", "config needs limits: a map such as { maxMsgs: 1000 } ({} removes every limit)");
  }
  if (!isPlainMap(value)) {
    throw new StrataError("INVALID_ARGUMENT", `limits must be a map such as { maxMsgs: 1000 }, got ${describeValue(value)}`);
  }
  let count = 0;
  for (const name in value) {
    if (!Object.hasOwn(value, name)) continue;
    count += 1;
    if (count > LOCATION_LIMIT_FIELDS.length) {
      throw new StrataError("INVALID_ARGUMENT", `limits has more than ${LOCATION_LIMIT_FIELDS.length} fields; the fields are ${LOCATION_LIMIT_FIELDS.join(", ")}`);
    }
  }
  return value;
}

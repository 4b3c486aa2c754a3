#!/usr/bin/env bash
# One command from a fresh checkout to a running Strata stack (nats-server, coordinator, one
# persistence server with data under ./strata-data). Ctrl-C stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$PATH:/usr/sbin"
exec node bin/strata.js up "$@"

#!/usr/bin/env bash
# Installs what Strata needs on a Debian machine with Node 20: nats-server and openssl (Debian packages) and
# the npm dependencies, then builds the TypeScript. Safe to run again; skips what is present.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: nats-server, and openssl (deploy/secure/make-keys.sh and test/secure/ make a CA,
# certificates and keys with it).
MISSING=()
if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then MISSING+=(nats-server); fi
if ! command -v openssl >/dev/null 2>&1; then MISSING+=(openssl); fi
if [ ${#MISSING[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update
  $SUDO apt-get install -y "${MISSING[@]}"
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # `npm ci` can refuse a lockfile that lacks other platforms' optional packages; fall back.
  npm ci --no-audit --no-fund || npm install --no-audit --no-fund
fi

npm run build

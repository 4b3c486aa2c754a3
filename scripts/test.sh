#!/usr/bin/env bash
# One command from a fresh checkout to the full test suite: installs what is missing, then runs
# the type check and every vitest test (real nats-server, real S3-compatible server on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# test/secure/ makes its CA, certificates and keys with the openssl CLI.
if ! command -v openssl >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then sudo apt-get update && sudo apt-get install -y openssl; else apt-get update && apt-get install -y openssl; fi
fi
export PATH="$PATH:/usr/sbin"
npm test

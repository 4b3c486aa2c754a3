#!/usr/bin/env bash
# One command from a fresh checkout to the full test suite: installs what is missing, then runs
# the type check and every vitest test (real nats-server, real S3-compatible server on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export PATH="$PATH:/usr/sbin"
npm test

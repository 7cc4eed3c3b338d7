#!/usr/bin/env bash
# The README's main job: set up, start a local 3-validator cluster on 127.0.0.1,
# drive 100,000 signed transfers from two member banks through the SDK, print
# throughput, latency, per-ledger totals and every validator's head hash.
# Extra arguments go to `ledger-validator demo` (see --help), e.g. --keep-running.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/setup.sh
exec .venv/bin/ledger-validator demo "$@"

#!/usr/bin/env bash
# The README's test command (also what CI runs): set up, then run every test.
# Extra arguments go to pytest, e.g. `bash tests/run.sh tests/unit -x`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/local/setup.sh
exec .venv/bin/python -m pytest -q -p no:cacheprovider "${@:-tests}"

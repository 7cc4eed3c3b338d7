#!/usr/bin/env bash
# The benchmark from a fresh clone, in one command (README "Benchmark"):
#   bash deploy/local/bench.sh [ledger-validator bench options, e.g. --quick]
# Sets up .venv (deploy/local/setup.sh) plus the benchmark's Python extras
# (psycopg, matplotlib, PyNaCl, py-spy, pyinstrument), installs Debian's PostgreSQL
# binaries if they are missing (apt-get, as root or via passwordless sudo; the
# benchmark starts its own server in a temporary directory, no service is enabled;
# the same package's pg_basebackup clones the two standbys of the pg_sync part),
# then runs `ledger-validator bench`.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash deploy/local/setup.sh
echo "==> installing the benchmark's Python dependencies into .venv" >&2
.venv/bin/python -m pip install --quiet -c deploy/constraints.txt -e ".[node,dev,chaos,lazyfs,bench]"
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=none; fi
  if [ "$SUDO" != none ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> installing PostgreSQL binaries (apt-get install postgresql)" >&2
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null \
      || { $SUDO apt-get update -q >/dev/null && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; } \
      || echo "WARNING: apt-get install postgresql failed: the PostgreSQL part will be skipped" >&2
  else
    echo "WARNING: PostgreSQL binaries missing and no root/sudo to install them: the PostgreSQL part will be skipped" >&2
  fi
fi
exec .venv/bin/ledger-validator bench "$@"

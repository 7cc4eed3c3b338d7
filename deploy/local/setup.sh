#!/usr/bin/env bash
# Set up a development/demo environment from a fresh clone:
#   .venv with the validator, the SDK and the test tools; generated protobuf code.
# Idempotent: re-running only installs what changed. Usage: bash deploy/local/setup.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv
fi
echo "==> installing the validator, SDK and test dependencies into .venv" >&2
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[node,dev]"
echo "==> generating protobuf/gRPC code from proto/" >&2
.venv/bin/python proto/generate.py

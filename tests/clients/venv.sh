#!/bin/sh
# Creates the Python virtualenv the client tests and the schemathesis test run
# in, once per content of requirements.txt (and Python version), and prints
# its path on stdout. Each content gets a venv of its own, so that checkouts
# pinning different versions do not rebuild each other's.
# Idempotent and safe to run concurrently: a lock serialises builders, and a
# venv is used only after its install completed.
#
#   VENV=$(tests/clients/venv.sh) && "$VENV/bin/python" -m pytest tests/clients
#
# Environment: CANCEL_OPERATOR_CACHE (default ~/.cache/cancel-operator),
# PYTHON (default python3).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
requirements="$here/requirements.txt"
cache="${CANCEL_OPERATOR_CACHE:-$HOME/.cache/cancel-operator}"
python="${PYTHON:-python3}"
mkdir -p "$cache"

key=$({ cat "$requirements"; "$python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)
venv="$cache/venv-clients-$(printf %s "$key" | cut -c1-12)"
stamp="$venv/.requirements.sha256"

current() {
  [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ]
}

if ! current; then
  exec 9>"$cache/venv-clients.lock"
  flock 9
  if ! current; then
    echo "building $venv from $requirements" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv" >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
      -r "$requirements" >&2
    echo "$key" >"$stamp"
  fi
  flock -u 9
fi
echo "$venv"

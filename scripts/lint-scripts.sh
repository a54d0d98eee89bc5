#!/usr/bin/env bash
# Runs shellcheck over every shell script of the repository: scripts/,
# tests/cluster/, tests/clients/, tests/run-tests.sh and .ci/run, following
# the files they source. shellcheck is obtained as scripts/need-shellcheck.sh
# says.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$SECONDS

log() { printf 'lint-scripts: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
# shellcheck source=need-shellcheck.sh
. scripts/need-shellcheck.sh
need_shellcheck

scripts=(scripts/*.sh tests/cluster/*.sh tests/clients/*.sh tests/run-tests.sh .ci/run)
# Sourced files are looked up beside the script that sources them.
shellcheck --external-sources --source-path=SCRIPTDIR "$@" "${scripts[@]}"
log "${#scripts[@]} scripts clean ($((SECONDS - start))s)"

#!/usr/bin/env bash
# Lints the GitHub Actions workflows (.github/workflows) with actionlint, which
# also runs shellcheck on their `run:` scripts.
#
# actionlint is built from its Go module into the tool cache beside the control
# plane's tools (~/.cache/cancel-operator/bin), at the version pinned below, and
# reused while that version is the one installed. shellcheck is obtained as
# scripts/need-shellcheck.sh says.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
start=$SECONDS
ACTIONLINT_VERSION=v1.7.12
CACHE_DIR=${CANCEL_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cancel-operator}
BIN=$CACHE_DIR/bin
actionlint=$BIN/actionlint

log() { printf 'lint-workflows: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# `actionlint -version` prints the module version on its first line.
if [[ ! -x $actionlint || $("$actionlint" -version 2>/dev/null | head -1) != "$ACTIONLINT_VERSION" ]]; then
  command -v go >/dev/null || die "Go is required to build actionlint (https://go.dev/dl/)"
  log "building actionlint $ACTIONLINT_VERSION into $BIN"
  mkdir -p "$BIN"
  CGO_ENABLED=0 GOBIN=$BIN go install -trimpath -ldflags "-s -w" \
    "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
fi

# shellcheck source=need-shellcheck.sh
. scripts/need-shellcheck.sh
need_shellcheck

"$actionlint" -shellcheck "$(command -v shellcheck)" -pyflakes= "$@"
log "$(find .github/workflows -name '*.y*ml' | wc -l) workflows clean ($((SECONDS - start))s)"

#!/usr/bin/env bash
# Runs the whole test suite on a control plane of its own, started here and
# stopped on exit (also on failure or interrupt). Arguments, if any, replace the
# default target selection of cargo test (e.g. --test controller).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export CANCEL_OPERATOR_CLUSTER_LINK=$root/.cluster-test
export CANCEL_OPERATOR_CLUSTER=$CANCEL_OPERATOR_CLUSTER_LINK
cluster=tests/cluster/cluster.sh

cleanup() {
  local rc=$?
  if ((rc != 0)) && [[ -d $CANCEL_OPERATOR_CLUSTER_LINK/ ]]; then
    mkdir -p target/test-logs
    cp "$CANCEL_OPERATOR_CLUSTER_LINK"/*.log target/test-logs/ 2>/dev/null || true
    echo "control plane logs copied to target/test-logs/" >&2
  fi
  "$cluster" down
  exit "$rc"
}
trap cleanup EXIT
"$cluster" down
"$cluster" up >/dev/null
if (($#)); then
  cargo test "$@"
else
  cargo test --lib --bins --tests
fi

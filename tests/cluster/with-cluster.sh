#!/usr/bin/env bash
# with-cluster.sh NAME COMMAND...: runs COMMAND on a control plane of its own,
# linked at .NAME in the repository, started here and stopped on exit (also on
# failure or interrupt). On failure the control plane's logs are kept in
# target/NAME-logs/.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
name=${1:?usage: with-cluster.sh NAME COMMAND...}
shift
export CANCEL_OPERATOR_CLUSTER_LINK=$root/.$name
export CANCEL_OPERATOR_CLUSTER=$CANCEL_OPERATOR_CLUSTER_LINK
cluster=tests/cluster/cluster.sh

cleanup() {
  local rc=$?
  if ((rc != 0)) && [[ -d $CANCEL_OPERATOR_CLUSTER_LINK/ ]]; then
    mkdir -p "target/$name-logs"
    cp "$CANCEL_OPERATOR_CLUSTER_LINK"/*.log "target/$name-logs/" 2>/dev/null || true
    echo "control plane logs copied to target/$name-logs/" >&2
  fi
  "$cluster" down
  exit "$rc"
}
trap cleanup EXIT
"$cluster" down
"$cluster" up >/dev/null
"$@"

#!/usr/bin/env bash
# Runs the benchmarks (benches/cancel.rs) on a control plane of their own.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
export CANCEL_OPERATOR_CLUSTER_LINK=$root/.cluster-bench
export CANCEL_OPERATOR_CLUSTER=$CANCEL_OPERATOR_CLUSTER_LINK
cluster=tests/cluster/cluster.sh
trap '"$cluster" down' EXIT
"$cluster" down
"$cluster" up >/dev/null
cargo bench --bench cancel "$@"

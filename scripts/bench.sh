#!/usr/bin/env bash
# Runs the benchmarks (benches/cancel.rs) on a control plane of their own.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec tests/cluster/with-cluster.sh cluster-bench cargo bench --bench cancel "$@"

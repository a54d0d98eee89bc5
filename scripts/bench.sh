#!/usr/bin/env bash
# Runs the scale benchmark (benches/cancel.rs) on a control plane of its own,
# prints the report and writes it to BENCHMARKS.md.
#
#   make bench                    full scale: 1,000 running StageRuns, 9,000 finished
#   BENCH_SCALE=50 make bench     a quick run (50 running, 450 finished)
#
# Last comes the history archive (PostgreSQL, beside the control plane):
# 100 × BENCH_SCALE finished StageRuns written into the archive, BENCH_SCALE
# retained and BENCH_SCALE running; peak RSS of both processes, history reads
# from the archive against the cache, archive throughput. BENCH_HISTORY_ARCHIVE=0
# skips it, BENCH_HISTORY_ARCHIVE=only runs it alone (its report printed,
# BENCHMARKS.md left as it is); BENCH_ARCHIVE_ROWS sets the archive's rows.
#
# Settings (environment): BENCH_SCALE, BENCH_HISTORY, BENCH_HISTORY_REQUESTS,
# BENCH_HISTORY_ARCHIVE (1), BENCH_ARCHIVE_ROWS (100 × scale),
# BENCH_CONCURRENCY (64), BENCH_SAMPLES, BENCH_TIMEOUT_SECONDS,
# BENCH_CONTROLLER_ARGS (extra controller flags), BENCH_OUT (report path; empty:
# print only), BENCH_BIN (the binary to run; default: the image's, built by
# make image), BENCH_QPS_LIMITS=keep (leave the control plane's client rate
# limits as they are). Arguments go to cargo bench.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

if [[ ${1:-} == --inside ]]; then
  # Runs on the control plane that with-cluster.sh started.
  shift
  cluster=tests/cluster/cluster.sh
  dir=$(readlink "$CANCEL_OPERATOR_CLUSTER_LINK")
  if [[ ${BENCH_QPS_LIMITS:-} != keep ]]; then
    # Kubernetes alone is a baseline: lift the client-side rate limits of the
    # controller manager (job controller, garbage collector) and the
    # scheduler, as kwokctl's --disable-qps-limits does, so that it is
    # measured at its best. The flags are appended to the command lines that
    # cluster.sh keeps for restarts (the last occurrence of a flag wins).
    for c in kube-controller-manager kube-scheduler; do
      printf '%s\0' --kube-api-qps=5000 --kube-api-burst=10000 >>"$dir/$c.cmd"
      "$cluster" restart "$c" 2>/dev/null
    done
  fi
  exec cargo bench --bench cancel "$@"
fi

# What is measured is the binary the container image ships (static, musl,
# built by make image as the Dockerfile builds it): its allocator is musl's,
# and memory figures are for what runs in a cluster.
if [[ -z ${BENCH_BIN:-} ]]; then
  scripts/image.sh >&2
  BENCH_BIN=${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cancel-operator/target}/$(uname -m)-unknown-linux-musl/release/cancel-operator
  export BENCH_BIN
fi
# Benchmarks run without the test control plane's audit log.
export CANCEL_OPERATOR_AUDIT=${CANCEL_OPERATOR_AUDIT:-off}
export BENCH_COMMAND=${BENCH_COMMAND:-"$(env | grep -E '^BENCH_[A-Z_]+=' | grep -v '^BENCH_COMMAND=' | sort | tr '\n' ' ')make bench"}
# The control plane is stopped on exit, failure or interrupt (with-cluster.sh),
# and the benchmark kills the processes it started.
exec nice -n 10 tests/cluster/with-cluster.sh cluster-bench "$root/scripts/bench.sh" --inside "$@"

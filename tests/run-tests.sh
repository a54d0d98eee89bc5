#!/usr/bin/env bash
# Runs the whole test suite on a control plane of its own. Arguments, if any,
# replace the default target selection of cargo test (e.g. --test controller).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The image the chart's end-to-end test installs on a real node (quick when
# nothing changed).
if (($# == 0)) || [[ " $* " == *" chart_on_node "* ]]; then
  scripts/image.sh
fi
if (($#)); then
  exec tests/cluster/with-cluster.sh cluster-test cargo test "$@"
fi
# Every target runs, so that one failure does not hide the others.
exec tests/cluster/with-cluster.sh cluster-test cargo test --no-fail-fast --lib --bins --tests

#!/usr/bin/env bash
# Runs cancel-operator for real on the local control plane: installs the CRDs,
# starts the controller and the REST sidecar, and loads the demo data from
# the API documents. Ctrl-C stops everything it started: the control plane
# too when it started it, but not one that was already running.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
cluster=tests/cluster/cluster.sh
port=${SIDECAR_PORT:-8153}
log() { printf 'run: %s\n' "$*" >&2; }

if (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  log "port $port is in use; set SIDECAR_PORT to another port"
  exit 1
fi

cargo build --quiet
# Cargo builds into CARGO_TARGET_DIR when it is set (relative to this directory).
target=${CARGO_TARGET_DIR:-target}
[[ $target == /* ]] || target=$root/$target
bin=$target/debug/cancel-operator
state=${CANCEL_OPERATOR_CLUSTER_LINK:-$root/.cluster}

# A control plane that answers already is someone else's: used, not stopped.
own_cluster=true
if [[ -f $state/ready ]] &&
  "$state/bin/kubectl" --kubeconfig="$state/admin.kubeconfig" get --raw /readyz >/dev/null 2>&1; then
  own_cluster=false
  log "using the control plane already running at $state"
else
  "$cluster" up >/dev/null
fi

pids=()
stop() {
  trap - EXIT INT TERM
  log "stopping"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if $own_cluster; then
    "$cluster" down
  else
    log "leaving the control plane at $state running"
  fi
}
trap stop EXIT INT TERM
eval "$("$cluster" env)"

log "installing the CRDs"
kubectl apply --server-side -f crds/cancel.dev.yaml >/dev/null
kubectl wait --for=condition=Established crd/stageruns.cancel.dev crd/cancelrequests.cancel.dev --timeout=60s >/dev/null
kubectl apply -f examples/demo/namespace.yaml >/dev/null

# The archive (the control plane's PostgreSQL): a finished run moves there
# a minute after it ends (KEEP_FINISHED), and the REST API reads archived
# runs beside the cluster's, so that its history answers the same.
archive_url=""
keep=()
if [[ -f $state/postgres.url ]]; then
  archive_url=$(<"$state/postgres.url")
  keep=(--keep-finished "${KEEP_FINISHED:-1m}")
fi
log "starting the controller (log: $state/controller.log)"
CANCEL_OPERATOR_ARCHIVE_URL=$archive_url LOG_FORMAT=text "$bin" controller --state-namespace demo --metrics-address "127.0.0.1:${METRICS_PORT:-8080}" \
  "${keep[@]}" >"$state/controller.log" 2>&1 &
pids+=($!)
log "starting the sidecar on http://127.0.0.1:$port (log: $state/sidecar.log)"
CANCEL_OPERATOR_ARCHIVE_URL=$archive_url LOG_FORMAT=text "$bin" sidecar --listen "127.0.0.1:$port" --namespace demo \
  --users-file examples/demo/users.yaml >"$state/sidecar.log" 2>&1 &
pids+=($!)

log "creating the demo StageRuns"
split=$(mktemp -d)
csplit -z -s -f "$split/sr-" examples/demo/stageruns.yaml '/^---$/' '{*}'
for f in "$split"/sr-*; do
  name=$(kubectl create -f "$f" -o name)
  # One at a time, so that ids are handed out in this order.
  kubectl -n demo wait --for=jsonpath='{.status.id}' "$name" --timeout=60s >/dev/null
done
rm -rf "$split"
until curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
  kill -0 "${pids[1]}" 2>/dev/null || { log "the sidecar exited; see $state/sidecar.log"; exit 1; }
  sleep 0.2
done

cat <<MSG

cancel-operator is running.

  export KUBECONFIG=$KUBECONFIG PATH=$(dirname "$(command -v kubectl)"):\$PATH
  kubectl -n demo get stageruns
  curl -u admin:badger http://127.0.0.1:$port/go/api/stages/foo/DEV/history/0
  curl -u admin:badger -d "" http://127.0.0.1:$port/go/api/stages/demo_pipeline/first_stage/cancel
  kubectl -n demo wait --for=jsonpath='{.status.phase}'=Failed stagerun/demo-pipeline-1-first-stage

Finished runs move to the archive (PostgreSQL) a minute after they end; the
history above answers the same from there:
  psql "\$(cat $state/postgres.url)" -c 'select name, phase, result from stage_runs'

Tokens for the users operator, viewer and nobody are in $state/*.token.
Press Ctrl-C to stop.
MSG
wait "${pids[@]}"

#!/usr/bin/env bash
# Counts the API requests of a bulk cancel, per component, verb and resource,
# from the kube-apiserver's audit log: where a cancel's time goes when the API
# server is the bottleneck.
#
#   make bench-requests                      100 running StageRuns, one selector cancel
#   BENCH_SCALE=300 make bench-requests
#   BENCH_TARGET=each make bench-requests    one CancelRequest per StageRun instead
#   BENCH_KCM_ARGS=--concurrent-job-syncs=20 make bench-requests
#
# Runs on a control plane of its own (stopped on exit) with the release binary.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
n=${BENCH_SCALE:-100}
target=${BENCH_TARGET:-selector}

if [[ ${1:-} != --inside ]]; then
  cargo build --release --quiet
  exec tests/cluster/with-cluster.sh cluster-requests "$0" --inside
fi

cluster=tests/cluster/cluster.sh
dir=$(readlink "$CANCEL_OPERATOR_CLUSTER_LINK")
bin=${CARGO_TARGET_DIR:-$root/target}/release/cancel-operator
kubectl() { "$dir/bin/kubectl" --kubeconfig="$dir/admin.kubeconfig" "$@"; }

# Audit every request's metadata; Kubernetes alone gets its client limits
# lifted, as in make bench.
printf 'apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n' >"$dir/audit.yaml"
printf '%s\0' --audit-policy-file="$dir/audit.yaml" --audit-log-path="$dir/audit.log" --audit-log-format=json \
  >>"$dir/kube-apiserver.cmd"
"$cluster" restart kube-apiserver 2>/dev/null
for c in kube-controller-manager kube-scheduler; do
  printf '%s\0' --kube-api-qps=5000 --kube-api-burst=10000 >>"$dir/$c.cmd"
  "$cluster" restart "$c" 2>/dev/null
done
# BENCH_KCM_ARGS: more kube-controller-manager flags, to see what limits a
# cancel (for example --concurrent-job-syncs=20; the default is 5).
if [[ -n ${BENCH_KCM_ARGS:-} ]]; then
  read -ra kcm_args <<<"$BENCH_KCM_ARGS"
  printf '%s\0' "${kcm_args[@]}" >>"$dir/kube-controller-manager.cmd"
  "$cluster" restart kube-controller-manager 2>/dev/null
fi

ns=requests
kubectl apply -f crds/ >/dev/null
kubectl create namespace "$ns" >/dev/null
KUBECONFIG=$dir/admin.kubeconfig LOG_FORMAT=text \
  "$bin" controller --namespace "$ns" --state-namespace "$ns" --metrics-address 127.0.0.1:0 \
  >"$dir/controller.log" 2>&1 &
controller=$!
trap 'kill $controller 2>/dev/null || true' EXIT

template='{metadata: {annotations: {sim.cancel.dev/run-for: 24h}}, spec: {restartPolicy: Never, terminationGracePeriodSeconds: 30, containers: [{name: main, image: busybox}]}}'
for ((i = 0; i < n; i++)); do
  printf -- '---\napiVersion: cancel.dev/v1alpha1\nkind: StageRun\nmetadata: {name: run-%d, labels: {set: bulk}}\n' "$i"
  printf 'spec: {pipeline: p%d, pipelineCounter: 1, stage: build, jobs: [{name: job1, template: %s}, {name: job2, template: %s}]}\n' \
    "$i" "$template" "$template"
done | kubectl -n "$ns" apply -f - >/dev/null

# until SECONDS WHAT COMMAND...: waits until COMMAND succeeds.
until_true() {
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    ((SECONDS < deadline)) || { echo "timed out waiting for $what" >&2; exit 1; }
    sleep 0.5
  done
}
pods_running() { (($(kubectl -n "$ns" get pods --no-headers 2>/dev/null | grep -c Running) == 2 * n)); }
all_cancelled() {
  (($(kubectl -n "$ns" get stageruns --no-headers | grep -c Cancelled) == n)) &&
    (($(kubectl -n "$ns" get pods --no-headers 2>/dev/null | wc -l) == 0))
}
until_true 600 "$((2 * n)) pods running" pods_running

from=$(date -u +%FT%T.%6NZ)
start=$SECONDS
if [[ $target == each ]]; then
  for ((i = 0; i < n; i++)); do
    printf -- '---\napiVersion: cancel.dev/v1alpha1\nkind: CancelRequest\nmetadata: {name: c-%d}\n' "$i"
    printf 'spec: {target: {stageRun: run-%d}, requestedBy: admin, reason: bench}\n' "$i"
  done | kubectl -n "$ns" create -f - >/dev/null
else
  kubectl -n "$ns" create -f - >/dev/null <<EOF
apiVersion: cancel.dev/v1alpha1
kind: CancelRequest
metadata: {name: bulk}
spec: {target: {selector: {matchLabels: {set: bulk}}}, requestedBy: admin, reason: bench}
EOF
fi
until_true 600 "$n StageRuns cancelled" all_cancelled
took=$((SECONDS - start))
to=$(date -u +%FT%T.%6NZ)

echo "requests of a bulk cancel of $n StageRuns × 2 jobs (target: $target), ${took} s, from the audit log:"
python3 - "$dir/audit.log" "$from" "$to" "$n" <<'EOF'
import collections, json, sys

path, start, end, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
counts = collections.Counter()
for line in open(path):
    e = json.loads(line)
    if e.get("stage") != "ResponseComplete":
        continue
    if not (start <= e["requestReceivedTimestamp"][:27] <= end):
        continue
    agent = e.get("userAgent", "")
    if "kubectl" in agent:
        continue  # this script's own polling
    who = agent.split(" ")[0].split("/")[0] or "cancel-operator"
    ref = e.get("objectRef", {})
    what = ref.get("resource", "") + ("/" + ref["subresource"] if ref.get("subresource") else "")
    counts[(who, e["verb"], what)] += 1
print(f"| component | verb | resource | requests | per StageRun |\n|---|---|---|---|---|")
for (who, verb, what), c in sorted(counts.items(), key=lambda kv: -kv[1]):
    if c >= 3:
        print(f"| {who} | {verb} | {what} | {c} | {c / n:.2f} |")
EOF

echo
echo "where the time goes: seconds from the cancel until each step is done for a StageRun (its last Job or pod):"
python3 - "$dir/audit.log" "$from" "$to" <<'EOF'
import collections, datetime, json, re, sys

path, start, end = sys.argv[1:4]
t0 = datetime.datetime.fromisoformat(start.replace("Z", "+00:00"))
child = re.compile(r"^(run-\d+)-job\d-")
steps = [
    ("Canceling written", "cancel-operator", "patch", "stageruns/status", 0),
    ("Jobs suspended", "cancel-operator", "patch", "jobs", -1),
    ("job controller: Job status written", "kube-controller-manager", "update", "jobs/status", -1),
    ("job controller: pods deleted", "kube-controller-manager", "delete", "pods", -1),
    ("Jobs deleted", "cancel-operator", "delete", "jobs", -1),
    ("job controller: pod finalizers removed", "kube-controller-manager", "patch", "pods", -1),
    ("kwok: pods deleted (grace 0)", "kwok", "delete", "pods", -1),
    ("confirmed by a list", "cancel-operator", "list", "pods", -1),
    ("Failed written", "cancel-operator", "patch", "stageruns/status", 1),
]
seen = collections.defaultdict(list)
for line in open(path):
    e = json.loads(line)
    if e.get("stage") != "ResponseComplete" or not (start <= e["requestReceivedTimestamp"][:27] <= end):
        continue
    if e.get("responseStatus", {}).get("code", 200) >= 300:
        continue  # a step is done by the request that did it
    agent = e.get("userAgent", "")
    if "kubectl" in agent:
        continue
    who = agent.split(" ")[0].split("/")[0] or "cancel-operator"
    ref = e.get("objectRef", {})
    what = ref.get("resource", "") + ("/" + ref["subresource"] if ref.get("subresource") else "")
    name = ref.get("name", "")
    m = child.match(name)
    run = m.group(1) if m else name
    if what == "pods" and e["verb"] == "list":
        # The confirming list names no object: its selector is the run's uid.
        run = e.get("requestURI", "")
    at = datetime.datetime.fromisoformat(e["stageTimestamp"].replace("Z", "+00:00"))
    seen[(who, e["verb"], what, run)].append((at - t0).total_seconds())
def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")
print("| step | p50 | p90 | max |\n|---|---|---|---|")
for label, who, verb, what, pick in steps:
    per_run = [sorted(v)[pick] for (w, vb, wt, run), v in seen.items()
               if (w, vb, wt) == (who, verb, what) and (pick != 1 or len(v) > 1)]
    if per_run:
        print(f"| {label} | {pct(per_run, .5):.1f} | {pct(per_run, .9):.1f} | {max(per_run):.1f} |")
EOF

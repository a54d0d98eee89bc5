#!/usr/bin/env bash
# The test control plane: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kwok, built from Go modules and run on loopback; beside
# it PostgreSQL (Debian's package) for the archive of finished runs.
#
#   cluster.sh build   build (or reuse) the binaries under $CACHE_DIR/bin
#   cluster.sh up      start a control plane in a temporary directory; the repository's
#                      .cluster link points at it; prints the admin kubeconfig path
#   cluster.sh down    stop it and remove its directory, leaving no process behind
#   cluster.sh env     print shell exports for the running control plane
#   cluster.sh restart COMPONENT   restart one component with the same flags
#   cluster.sh stop|start COMPONENT   stop one component, or start it again
#   cluster.sh node up|down|state|import ARCHIVE   one real node (see node.sh)
#
# PostgreSQL's URL (with its password) is in postgres.url in the control
# plane's directory, and the CA of the certificate it serves TLS with in
# postgres-ca.crt.
#
# The API server writes an audit log of every write to audit.log in the
# control plane's directory, unless CANCEL_OPERATOR_AUDIT=off.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
CACHE_DIR=${CANCEL_OPERATOR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cancel-operator}
BIN=$CACHE_DIR/bin
LINK=${CANCEL_OPERATOR_CLUSTER_LINK:-$root/.cluster}
USERS=(admin operator viewer nobody)

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
# shellcheck source=node.sh
. "$here/node.sh"

# --- build -----------------------------------------------------------------

# What the binaries are built from: the Go module, the tool versions, the
# multi-call binary's source, the build recipe (bash prints the function
# without its comments, so that a comment edit rebuilds nothing) and Go.
build_key() {
  (cd "$here" && cat go.mod go.sum cmd/kube/*.go && grep -v '^#' versions.env && declare -f build && go version) |
    sha256sum | cut -d' ' -f1
}

build() {
  command -v go >/dev/null || die "Go is required to build the control plane (https://go.dev/dl/)"
  # shellcheck source=versions.env
  . "$here/versions.env"
  local key stamp="$BIN/.build-key"
  key=$(build_key)
  if [[ -f $stamp && $(cat "$stamp") == "$key" && -x $BIN/kube && -x $BIN/kwok && -x $BIN/helm ]]; then
    return 0
  fi
  mkdir -p "$BIN"
  local start=$SECONDS
  export CGO_ENABLED=0
  log "building etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl"
  # Stamp the release version so that /version reports it (helm and kubectl check it).
  local k8s v
  k8s=$(cd "$here" && go list -m -f '{{.Version}}' k8s.io/kubernetes)
  v="-X k8s.io/component-base/version.gitVersion=$k8s -X k8s.io/client-go/pkg/version.gitVersion=$k8s"
  v+=" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMajor=1"
  v+=" -X k8s.io/component-base/version.gitMinor=$(cut -d. -f2 <<<"$k8s") -X k8s.io/client-go/pkg/version.gitMinor=$(cut -d. -f2 <<<"$k8s")"
  v+=" -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitTreeState=clean"
  (cd "$here" && go build -trimpath -ldflags "-s -w $v" -o "$BIN/kube" ./cmd/kube)
  log "building kwok $KWOK_VERSION"
  GOBIN=$BIN go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  log "building helm $HELM_VERSION"
  GOBIN=$BIN go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
    ln -sf kube "$BIN/$c"
  done
  echo "$key" >"$stamp"
  log "built in $((SECONDS - start))s into $BIN"
}

# --- postgres --------------------------------------------------------------

# The archive's database: Debian's postgresql package (installed when
# missing), initialised in the control plane's directory, on loopback.
PG_USER=cancel
PG_DATABASE=cancel_operator

# The bin directory of the newest PostgreSQL installed the Debian way.
pg_bindir() {
  local found=(/usr/lib/postgresql/*/bin/postgres)
  [[ -x ${found[0]} ]] || return 1
  printf '%s\n' "${found[@]%/postgres}" | sort -V | tail -n 1
}

need_postgres() {
  pg_bindir >/dev/null && return 0
  if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
    die "PostgreSQL is missing (Debian: apt-get install postgresql)"
  fi
  log "installing postgresql"
  # Only its binaries are wanted: no cluster of the system's own.
  mkdir -p /etc/postgresql-common
  [[ -e /etc/postgresql-common/createcluster.conf ]] ||
    echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.conf
  export DEBIAN_FRONTEND=noninteractive
  local install=(apt-get install -y --no-install-recommends -o Dpkg::Options::=--force-confold postgresql)
  "${install[@]}" >/dev/null || { apt-get update >/dev/null && "${install[@]}" >/dev/null; } ||
    die "apt-get install postgresql failed"
  pg_bindir >/dev/null || die "no PostgreSQL under /usr/lib/postgresql after apt-get"
}

# The command prefix that runs PostgreSQL's programs: PostgreSQL refuses to
# run as root, so root runs them as the postgres user.
pg_as() {
  if [[ $(id -u) == 0 ]]; then
    printf '%s\0' setpriv --reuid=postgres --regid=postgres --init-groups --
  fi
}

# postgres_init PORT: initialise a database cluster in $dir/postgres and start
# it on 127.0.0.1:PORT (its socket in the same directory). Not waited for:
# postgres_ready does, once the rest is started.
postgres_init() {
  local port=$1 bin as=() password
  bin=$(pg_bindir)
  mapfile -d '' as < <(pg_as)
  mkdir -m 700 "$dir/postgres"
  if [[ $(id -u) == 0 ]]; then
    # The postgres user may pass through the directory, and own its own.
    chgrp postgres "$dir" && chmod 710 "$dir"
    chown postgres:postgres "$dir/postgres"
  fi
  password=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
  (umask 077 && printf '%s\n' "$password" >"$dir/postgres/pwfile")
  [[ $(id -u) != 0 ]] || chown postgres "$dir/postgres/pwfile"
  "${as[@]}" "$bin/initdb" -D "$dir/postgres/data" -U "$PG_USER" --pwfile="$dir/postgres/pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C --no-sync --no-instructions \
    >"$dir/postgres-init.log" 2>&1 || { tail -n 20 "$dir/postgres-init.log" >&2; die "initdb failed"; }
  rm -f "$dir/postgres/pwfile"
  postgres_tls
  # Test data: no fsync, nothing written twice. TLS as a managed database
  # offers it: clients choose (the URL's sslmode; prefer by default).
  start postgres "${as[@]}" "$bin/postgres" -D "$dir/postgres/data" -p "$port" \
    -c listen_addresses=127.0.0.1 -c unix_socket_directories="$dir/postgres" \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300 \
    -c ssl=on -c ssl_cert_file="$dir/postgres/tls/server.crt" -c ssl_key_file="$dir/postgres/tls/server.key"
  (umask 077 && echo "postgres://$PG_USER:$password@127.0.0.1:$port/$PG_DATABASE" >"$dir/postgres.url")
}

# A CA of the control plane's own (its certificate in postgres-ca.crt) and a
# certificate it signs for 127.0.0.1, which postgres serves: clients can be
# tested with sslmode=verify-full against that CA.
postgres_tls() {
  local tls=$dir/postgres/tls ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
  command -v openssl >/dev/null || die "openssl is missing (Debian: apt-get install openssl)"
  mkdir -m 700 "$tls"
  (
    set -e
    cd "$tls"
    openssl req -x509 "${ec[@]}" -days 30 -subj "/CN=cancel-operator test CA" \
      -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
      -keyout ca.key -out ca.crt
    openssl req "${ec[@]}" -subj "/CN=127.0.0.1" -keyout server.key -out server.csr
    printf '%s\n' subjectAltName=IP:127.0.0.1 basicConstraints=critical,CA:FALSE \
      keyUsage=critical,digitalSignature extendedKeyUsage=serverAuth >server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
      -extfile server.ext -out server.crt
    chmod 600 server.key
  ) >"$dir/postgres-tls.log" 2>&1 || { cat "$dir/postgres-tls.log" >&2; die "could not make postgres's certificate"; }
  cp "$tls/ca.crt" "$dir/postgres-ca.crt"
  [[ $(id -u) != 0 ]] || chown -R postgres:postgres "$tls"
}

# The port postgres was started on (from its command line).
postgres_port() {
  local cmd=()
  mapfile -d '' cmd <"$dir/postgres.cmd"
  local i
  for ((i = 0; i < ${#cmd[@]} - 1; i++)); do
    [[ ${cmd[i]} == -p ]] && { echo "${cmd[i + 1]}"; return 0; }
  done
  return 1
}

# Waits until postgres answers; creates the database on the first start.
postgres_ready() {
  local bin port as=()
  bin=$(pg_bindir)
  port=$(postgres_port)
  mapfile -d '' as < <(pg_as)
  wait_for 60 postgres "$bin/pg_isready" -q -h "$dir/postgres" -p "$port"
  if [[ ! -f $dir/postgres/created ]]; then
    "${as[@]}" "$bin/createdb" -h "$dir/postgres" -p "$port" -U "$PG_USER" "$PG_DATABASE"
    "${as[@]}" touch "$dir/postgres/created"
  fi
}

# --- up --------------------------------------------------------------------

# wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND until it succeeds.
wait_for() {
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log "timed out waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

# start NAME COMMAND...: run a component in its own session, logging to NAME.log;
# its command line is kept in NAME.cmd for restarts.
start() {
  local name=$1
  shift
  printf '%s\0' "$@" >"$dir/$name.cmd"
  setsid "$@" >>"$dir/$name.log" 2>&1 </dev/null &
  echo "$! $name" >>"$dir/pids"
}

# Whether every process listed in a pids file (the control plane's by
# default) still runs; names the first that exited and shows its log.
alive() {
  local pids=${1:-$dir/pids} pid name
  while read -r pid name; do
    kill -0 "$pid" 2>/dev/null || { log "$name exited; its log:"; tail -n 30 "$dir/$name.log" >&2; return 1; }
  done <"$pids"
}

kubeconfig() {
  local user=$1 token=$2
  cat <<EOF
apiVersion: v1
kind: Config
clusters:
- name: cancel-operator-test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $dir/certs/apiserver.crt
users:
- name: $user
  user:
    token: $token
contexts:
- name: $user
  context:
    cluster: cancel-operator-test
    user: $user
    namespace: default
current-context: $user
EOF
}

up() {
  if [[ -L $LINK && -f $LINK/ready ]]; then
    if (dir=$(readlink "$LINK") && alive); then
      log "already running"
      echo "$LINK/admin.kubeconfig"
      return 0
    fi
    down
  fi
  build
  need_postgres
  local t0=$SECONDS
  dir=$(mktemp -d "${TMPDIR:-/tmp}/cancel-operator-cluster.XXXXXX")
  : >"$dir/pids"
  ln -sfn "$dir" "$LINK"
  ln -sfn "$BIN" "$dir/bin"
  trap 'log "start failed; logs are in $dir"; down_dir "$dir" keep; exit 1' ERR

  local ports
  mapfile -t ports < <("$BIN/kube" freeport 4)
  local etcd_port=${ports[0]} peer_port=${ports[1]} pg_port=${ports[3]}
  api_port=${ports[2]}

  # Static-token users: admin is system:masters; the others get only what
  # RBAC objects created later grant them.
  local user token
  : >"$dir/tokens.csv"
  for user in "${USERS[@]}"; do
    token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    if [[ $user == admin ]]; then
      echo "$token,$user,uid-$user,\"system:masters\"" >>"$dir/tokens.csv"
    else
      echo "$token,$user,uid-$user" >>"$dir/tokens.csv"
    fi
    printf '%s' "$token" >"$dir/$user.token"
  done
  chmod 600 "$dir"/tokens.csv "$dir"/*.token
  "$BIN/kube" keygen "$dir/sa.key" "$dir/sa.pub"
  node_kubelet_client_cert

  start etcd "$BIN/etcd" --name=test --data-dir="$dir/etcd" \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="test=http://127.0.0.1:$peer_port" --unsafe-no-fsync --log-level=warn
  wait_for 60 etcd curl -fsS "http://127.0.0.1:$etcd_port/health"

  # The API server's own record of every write (who, what, when), for tests
  # that must show from its side what a client wrote; off for benchmarks.
  local audit=()
  if [[ ${CANCEL_OPERATOR_AUDIT:-on} != off ]]; then
    printf '%s\n' 'apiVersion: audit.k8s.io/v1' 'kind: Policy' 'omitStages: [RequestReceived]' 'rules:' \
      '- level: Metadata' '  verbs: [create, update, patch, delete, deletecollection]' '- level: None' \
      >"$dir/audit-policy.yaml"
    audit=(--audit-policy-file="$dir/audit-policy.yaml" --audit-log-path="$dir/audit.log"
      --audit-log-format=json --audit-log-maxsize=100 --audit-log-maxbackup=1)
  fi
  # MutatingAdmissionPolicy (beta in 1.35, served only when enabled): the
  # chart fills an empty CancelRequest requestedBy with it.
  start kube-apiserver "$BIN/kube-apiserver" "${audit[@]}" \
    --etcd-servers="http://127.0.0.1:$etcd_port" --cert-dir="$dir/certs" \
    --secure-port="$api_port" --bind-address=127.0.0.1 --advertise-address=127.0.0.1 \
    --service-cluster-ip-range=10.0.0.0/24 --allow-privileged=true \
    --authorization-mode=RBAC --token-auth-file="$dir/tokens.csv" \
    --service-account-issuer="https://127.0.0.1:$api_port" \
    --service-account-key-file="$dir/sa.pub" --service-account-signing-key-file="$dir/sa.key" \
    --endpoint-reconciler-type=none \
    --disable-admission-plugins=TaintNodesByCondition \
    --feature-gates=MutatingAdmissionPolicy=true --runtime-config=admissionregistration.k8s.io/v1beta1=true \
    --kubelet-preferred-address-types=InternalIP \
    --kubelet-client-certificate="$dir/certs/kubelet-client.crt" --kubelet-client-key="$dir/certs/kubelet-client.key"
  # Started while the API server starts.
  postgres_init "$pg_port"
  for user in "${USERS[@]}"; do
    kubeconfig "$user" "$(cat "$dir/$user.token")" >"$dir/$user.kubeconfig"
  done
  chmod 600 "$dir"/*.kubeconfig
  export KUBECONFIG=$dir/admin.kubeconfig
  wait_for 120 kube-apiserver "$BIN/kubectl" get --raw /readyz
  alive

  start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$KUBECONFIG" \
    --leader-elect=false --secure-port=0 --use-service-account-credentials=false \
    --controllers=job-controller,resourcequota-controller,deployment-controller,replicaset-controller,garbage-collector-controller,namespace-controller,serviceaccount-controller,serviceaccount-token-controller,ttl-after-finished-controller,pod-garbage-collector-controller,root-ca-certificate-publisher-controller,endpointslice-controller \
    --service-account-private-key-file="$dir/sa.key" --root-ca-file="$dir/certs/apiserver.crt" \
    --concurrent-job-syncs=10 --concurrent-gc-syncs=10
  start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$KUBECONFIG" --leader-elect=false --secure-port=0
  start kwok "$BIN/kwok" --kubeconfig="$KUBECONFIG" --config="$here/stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds=40 --cidr=10.1.0.0/16 --node-ip=10.1.0.1 --server-address=""

  "$BIN/kubectl" apply -f "$here/nodes.yaml" >/dev/null
  wait_for 60 "a Ready kwok node" "$BIN/kubectl" wait --for=condition=Ready node --all --timeout=2s
  wait_for 60 "the default service account" "$BIN/kubectl" -n default get serviceaccount default
  postgres_ready
  alive
  trap - ERR
  date +%s >"$dir/ready"
  log "ready in $((SECONDS - t0))s; kubeconfigs for ${USERS[*]} are in $LINK/"
  echo "$LINK/admin.kubeconfig"
}

# --- down ------------------------------------------------------------------

# down_dir DIR [keep]: stop every process started for DIR, newest first, then
# remove DIR unless asked to keep it.
down_dir() {
  local d=$1 pid name pids=()
  if [[ -f $d/pids ]]; then
    while read -r pid name; do pids=("$pid" "${pids[@]}"); done <"$d/pids"
    for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true; done
    local deadline=$((SECONDS + 15))
    for pid in "${pids[@]}"; do
      while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    done
  fi
  [[ ${2:-} == keep ]] || rm -rf "$d"
}

down() {
  if [[ -L $LINK ]]; then
    node_down
    down_dir "$(readlink "$LINK")"
    rm -f "$LINK"
    log "stopped"
  fi
}

# The running control plane's directory, or die.
running_dir() {
  [[ -f $LINK/ready ]] || die "no control plane is running"
  dir=$(readlink "$LINK")
}

# stop_component NAME: stop one component (it stays stopped until started).
stop_component() {
  local name=$1 pid
  [[ -f $dir/$name.cmd ]] || die "no component named $name"
  pid=$(awk -v n="$name" '$2 == n {print $1}' "$dir/pids" | tail -n 1)
  if [[ -n $pid ]]; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 30))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    awk -v n="$name" '$2 != n' "$dir/pids" >"$dir/pids.new" && mv "$dir/pids.new" "$dir/pids"
  fi
}

# start_component NAME: start one component with the flags it was first
# started with, and wait until it answers.
start_component() {
  local name=$1 cmd=()
  [[ -f $dir/$name.cmd ]] || die "no component named $name"
  ! awk -v n="$name" '$2 == n {found=1} END {exit !found}' "$dir/pids" || die "$name is running"
  mapfile -d '' cmd <"$dir/$name.cmd"
  start "$name" "${cmd[@]}"
  case $name in
  kube-apiserver) wait_for 120 kube-apiserver "$BIN/kubectl" --kubeconfig="$dir/admin.kubeconfig" get --raw /readyz ;;
  postgres) postgres_ready ;;
  esac
}

# restart NAME: stop one component and start it again with the same flags
# (tests use it to restart the kube-apiserver under a running controller).
restart() {
  running_dir
  stop_component "$1"
  start_component "$1"
  log "restarted $1"
}

env_() {
  [[ -f $LINK/ready ]] || die "no control plane is running; start one with: make cluster-up"
  echo "export KUBECONFIG=$LINK/admin.kubeconfig"
  echo "export PATH=$BIN:\$PATH"
}

case ${1:-} in
build) build ;;
up) up ;;
down) down ;;
env) env_ ;;
restart) restart "${2:?usage: $0 restart COMPONENT}" ;;
stop) running_dir && stop_component "${2:?usage: $0 stop COMPONENT}" && log "stopped ${2}" ;;
start) running_dir && start_component "${2:?usage: $0 start COMPONENT}" && log "started ${2}" ;;
node) node_cmd "${@:2}" ;;
*) die "usage: $0 {build|up|down|env|restart|stop|start COMPONENT|node up|down|state|import ARCHIVE}" ;;
esac

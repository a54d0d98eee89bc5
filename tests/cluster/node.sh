# shellcheck shell=bash
# One real node for the test control plane (sourced by cluster.sh): a kubelet
# from the multi-call binary, Debian's containerd and runc, and a CNI bridge.
#
#   cluster.sh node up      join the node to the running control plane
#   cluster.sh node down    remove it and undo every change it made to the machine
#   cluster.sh node state   print the machine state that the node changes (links,
#                           addresses, routes, network namespaces, iptables, mounts,
#                           cgroups, sysctls, its processes and directories)
#
# The node is tainted (cancel.dev/node=real:NoSchedule) and labelled
# cancel.dev/node=real: only pods that tolerate the taint and select the label
# run on it; every other pod (StageRun Jobs included) goes to the kwok nodes.
# Its containerd, kubelet, images, pods and logs live under the control plane's
# directory (node/). It changes the machine only as follows, and `node down`
# (also run by `cluster.sh down`) undoes it: the bridge cancel-node0 on
# 10.89.0.0/24 with route_localnet on it, one DNAT rule sending pods' traffic to
# the kubernetes Service IP to the API server on loopback, the kubelet's KUBE-*
# iptables chains, its /kubepods cgroups and kernel tunables, ip_forward (the
# bridge plugin turns it on), /run/containerd/s (containerd's shim sockets) and
# /var/lib/cni (the CNI result cache). One node per machine at a time.

NODE_NAME=node-0
NODE_BRIDGE=cancel-node0
NODE_CIDR=10.89.0.0/24
NODE_IP=10.89.0.1
NODE_TAINT=cancel.dev/node=real:NoSchedule
NODE_LABEL=cancel.dev/node=real
SERVICE_IP=10.0.0.1
# The pause image's name: containerd's sandbox_image.
PAUSE_IMAGE=registry.k8s.io/pause:3.10.1
NODE_PACKAGES=(containerd runc containernetworking-plugins iptables umoci musl-tools)
# Sysctls that the node changes: ip_forward (the bridge plugin) and the
# kernel tunables the kubelet sets.
NODE_SYSCTLS=(net.ipv4.ip_forward net.ipv6.conf.all.forwarding vm.overcommit_memory vm.panic_on_oom
  kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
# Directories outside the node's own that its programs may create.
NODE_SYSTEM_DIRS=(/run/containerd /var/lib/cni /run/netns /var/run/netns /etc/cni /opt/cni
  /var/lib/kubelet /var/log/pods /var/log/containers /var/lib/containerd /opt/containerd
  /usr/libexec/kubernetes)

# --- state -------------------------------------------------------------------

node_iptables() {
  local cmd t
  for cmd in iptables ip6tables; do
    command -v "$cmd" >/dev/null || continue
    for t in filter nat mangle raw; do
      "$cmd" -w 5 -t "$t" -S 2>/dev/null | sed "s/^/$cmd $t /"
    done
  done
}

node_state() {
  echo "# links"
  ip -o link show | awk '{sub(/@.*/, "", $2); print $2}' | sort
  echo "# addresses"
  ip -o addr show | awk '{print $2, $3, $4}' | sort
  echo "# routes"
  ip route show table all | grep -v '^local\|^broadcast\|^multicast' | sort
  echo "# network namespaces"
  ip netns list 2>/dev/null | sort
  echo "# iptables"
  node_iptables
  echo "# mounts"
  awk '{print $5, $9}' /proc/self/mountinfo | sort
  echo "# cgroups"
  find /sys/fs/cgroup -mindepth 1 -maxdepth 2 -type d 2>/dev/null | sort
  echo "# sysctls"
  local s
  for s in "${NODE_SYSCTLS[@]}"; do echo "$s = $(sysctl -n "$s" 2>/dev/null)"; done
  echo "# processes"
  for s in containerd containerd-shim kubelet pause; do echo "$s $(pgrep -c -x "$s" || true)"; done
  echo "# directories"
  for s in "${NODE_SYSTEM_DIRS[@]}"; do if [[ -e $s ]]; then echo "$s"; fi; done
}

# --- up ----------------------------------------------------------------------

node_packages() {
  local missing=() p
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v umoci >/dev/null || missing+=(umoci)
  command -v musl-gcc >/dev/null || missing+=(musl-tools)
  ((${#missing[@]})) || return 0
  if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
    die "the node needs ${missing[*]} (Debian: apt-get install ${NODE_PACKAGES[*]})"
  fi
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
    { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; } ||
    die "apt-get install ${missing[*]} failed"
  for p in containerd runc iptables umoci musl-gcc; do command -v "$p" >/dev/null || die "$p is missing after apt-get"; done
}

# The pause image, built from Kubernetes' pause.c (static, musl) and packed with
# umoci; cached in $BIN beside the binaries.
# shellcheck disable=SC2154 # here: set by cluster.sh, which sources this file
node_pause_image() {
  local src out=$BIN/pause.oci.tar key
  src=$(cd "$here" && go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
  [[ -f $src ]] || (cd "$here" && go mod download k8s.io/kubernetes)
  [[ -f $src ]] || die "no $src"
  key=$( (sha256sum "$src"; echo "$PAUSE_IMAGE") | sha256sum | cut -d' ' -f1)
  if [[ -f $out && -f $out.key && $(<"$out.key") == "$key" ]]; then
    return 0
  fi
  log "building the pause image $PAUSE_IMAGE"
  local work tag=${PAUSE_IMAGE##*:}
  work=$(mktemp -d "$BIN/.pause.XXXXXX")
  musl-gcc -Os -static -Wall -DVERSION="$tag" -o "$work/pause" "$src"
  strip "$work/pause" 2>/dev/null || true
  umoci init --layout "$work/layout" >/dev/null
  umoci new --image "$work/layout:$tag" >/dev/null
  umoci unpack --image "$work/layout:$tag" "$work/bundle" >/dev/null
  install -m 0755 "$work/pause" "$work/bundle/rootfs/pause"
  umoci repack --image "$work/layout:$tag" "$work/bundle" >/dev/null
  umoci config --image "$work/layout:$tag" --os linux --architecture amd64 \
    --config.user 65535:65535 --config.entrypoint /pause >/dev/null
  umoci gc --layout "$work/layout"
  jq --arg name "$PAUSE_IMAGE" -c '.manifests[0].annotations["io.containerd.image.name"] = $name' \
    "$work/layout/index.json" >"$work/index.json"
  mv "$work/index.json" "$work/layout/index.json"
  (cd "$work/layout" && tar -cf "$work/pause.tar" oci-layout index.json blobs)
  mv "$work/pause.tar" "$out"
  echo "$key" >"$out.key"
  rm -rf "$work"
}

# The kubelet's client-certificate for the API server's connections to it
# (logs, exec, port-forward), signed by a CA of the control plane's own.
node_kubelet_client_cert() {
  local c=$dir/certs
  mkdir -p "$c"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
    -subj /CN=kubelet-client-ca -keyout "$c/kubelet-client-ca.key" -out "$c/kubelet-client-ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj /CN=kube-apiserver-kubelet-client -keyout "$c/kubelet-client.key" -out "$c/kubelet-client.csr" 2>/dev/null
  openssl x509 -req -in "$c/kubelet-client.csr" -CA "$c/kubelet-client-ca.crt" -CAkey "$c/kubelet-client-ca.key" \
    -CAcreateserial -days 30 -out "$c/kubelet-client.crt" 2>/dev/null
  chmod 600 "$c"/kubelet-client*.key
}

node_up() {
  [[ -f $LINK/ready ]] || die "no control plane is running; start one with: $0 up"
  dir=$(readlink "$LINK")
  local nd=$dir/node
  if [[ -f $nd/ready ]]; then
    log "the node is already up"
    return 0
  fi
  if ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
    die "$NODE_BRIDGE exists: another node runs on this machine (or one was left behind; see $0 node down)"
  fi
  [[ -f $dir/certs/kubelet-client.crt ]] || die "this control plane was started without the kubelet client certificate; restart it"
  local t0=$SECONDS
  node_packages
  node_pause_image
  mkdir -p "$nd"/{before,cni,ipam,containerd/root,containerd/state,kubelet,pod-logs,volume-plugins,runc}
  # What the teardown compares against: chains and rules, sysctls, directories.
  node_iptables >"$nd/before/iptables"
  local s
  for s in "${NODE_SYSCTLS[@]}"; do echo "$s=$(sysctl -n "$s" 2>/dev/null)"; done >"$nd/before/sysctls"
  for s in "${NODE_SYSTEM_DIRS[@]}"; do if [[ -e $s ]]; then echo "$s"; fi; done >"$nd/before/dirs"
  find /sys/fs/cgroup -mindepth 1 -maxdepth 1 -type d >"$nd/before/cgroups" 2>/dev/null
  : >"$nd/pids"
  trap 'log "node start failed; undoing it (logs are in $nd)"; node_down keep; exit 1' ERR

  # The bridge, made here so that the kubelet can serve on its address; the
  # CNI bridge plugin adopts it.
  ip link add "$NODE_BRIDGE" type bridge
  ip addr add "$NODE_IP/24" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  # Pods reach the API server (on loopback) through the kubernetes Service IP.
  sysctl -qw "net.ipv4.conf.$NODE_BRIDGE.route_localnet=1"
  local api_port
  api_port=$(sed -n 's|.*server: https://127.0.0.1:\([0-9]*\)$|\1|p' "$dir/admin.kubeconfig")
  iptables -w 5 -t nat -A PREROUTING -s "$NODE_CIDR" -d "$SERVICE_IP/32" -p tcp --dport 443 \
    -m comment --comment cancel-operator-node -j DNAT --to-destination "127.0.0.1:$api_port"

  cat >"$nd/cni/10-cancel-node.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "cancel-node",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$NODE_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$nd/ipam",
        "ranges": [[{"subnet": "$NODE_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
  cat >"$nd/containerd.toml" <<EOF
version = 2
root = "$nd/containerd/root"
state = "$nd/containerd/state"
[grpc]
  address = "$nd/containerd.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "$nd/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Root here may lack CAP_SYS_RESOURCE: never lower a process's oom_score_adj.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$nd/cni"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$nd/runc"
EOF
  node_start containerd containerd --config "$nd/containerd.toml"
  wait_for 30 containerd ctr -a "$nd/containerd.sock" version
  ctr -a "$nd/containerd.sock" -n k8s.io images import "$BIN/pause.oci.tar" >/dev/null

  local kubelet_port
  kubelet_port=$("$BIN/kube" freeport 1)
  cat >"$nd/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1; containerd 1.6 cannot tell the kubelet its driver.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$nd/containerd.sock
address: $NODE_IP
port: $kubelet_port
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $dir/certs/kubelet-client-ca.crt}
authorization:
  mode: Webhook
registerWithTaints:
- {key: cancel.dev/node, value: real, effect: NoSchedule}
failSwapOn: false
podLogsDir: $nd/pod-logs
volumePluginDir: $nd/volume-plugins
# Keep the imported images (they cannot be pulled here), on however small a disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 100Mi, imagefs.available: 100Mi, nodefs.inodesFree: 1%}
makeIPTablesUtilChains: false
# Secret volumes follow their Secret within seconds (a rotated password).
syncFrequency: 10s
maxPods: 30
EOF
  node_start kubelet "$BIN/kubelet" --config="$nd/kubelet.yaml" --kubeconfig="$dir/admin.kubeconfig" \
    --root-dir="$nd/kubelet" --cert-dir="$nd/kubelet/pki" --hostname-override="$NODE_NAME" \
    --node-ip="$NODE_IP" --node-labels="$NODE_LABEL"
  export KUBECONFIG=$dir/admin.kubeconfig
  "$BIN/kubectl" apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: cancel-operator-test:kubelet-api-admin
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:kubelet-api-admin}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: kube-apiserver-kubelet-client}
EOF
  local deadline=$((SECONDS + 120))
  until "$BIN/kubectl" wait --for=condition=Ready "node/$NODE_NAME" --timeout=1s >/dev/null 2>&1; do
    alive "$dir/node/pids"
    ((SECONDS < deadline)) || { log "timed out waiting for the node $NODE_NAME to be Ready"; false; }
    sleep 0.2
  done
  trap - ERR
  date +%s >"$nd/ready"
  log "node $NODE_NAME ready in $((SECONDS - t0))s (taint $NODE_TAINT, label $NODE_LABEL, pods on $NODE_CIDR)"
}

# node_start NAME COMMAND...: like start, with the pid kept in node/pids too.
node_start() {
  local name=$1
  start "$@"
  tail -n 1 "$dir/pids" >>"$dir/node/pids"
}

# Imports an OCI archive into the node's containerd (the name comes from its
# io.containerd.image.name annotation).
node_import() {
  [[ -f $LINK/node/ready ]] || die "no node is running; start one with: $0 node up"
  local d
  d=$(readlink "$LINK")
  ctr -a "$d/node/containerd.sock" -n k8s.io images import "${1:?usage: $0 node import ARCHIVE}" >/dev/null
}

# --- down --------------------------------------------------------------------

# node_stop_pid PID: TERM, then KILL after a while.
node_stop_pid() {
  local pid=$1 deadline=$((SECONDS + 15))
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || return 0
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
}

# node_down [keep]: removes the node of the control plane at $LINK (or $dir)
# and undoes what node_up changed; safe to run on a node that started halfway.
# shellcheck disable=SC2120 # node_up's ERR trap passes keep
node_down() {
  local d=${dir:-}
  [[ -n $d ]] || { [[ -L $LINK ]] && d=$(readlink "$LINK"); }
  local nd=$d/node
  [[ -n $d && -d $nd ]] || return 0
  local t0=$SECONDS sock=$nd/containerd.sock kubectl=("$BIN/kubectl" --kubeconfig="$d/admin.kubeconfig")
  # The kubelet removes its pods' network namespaces, mounts and cgroups.
  if "${kubectl[@]}" get "node/$NODE_NAME" >/dev/null 2>&1; then
    "${kubectl[@]}" cordon "$NODE_NAME" >/dev/null 2>&1 || true
    "${kubectl[@]}" delete pods -A --field-selector "spec.nodeName=$NODE_NAME" --grace-period=1 --wait=false >/dev/null 2>&1 || true
    local deadline=$((SECONDS + 30))
    while [[ -n $("${kubectl[@]}" get pods -A --field-selector "spec.nodeName=$NODE_NAME" -o name 2>/dev/null) ]] &&
      ((SECONDS < deadline)); do sleep 0.2; done
    "${kubectl[@]}" delete "node/$NODE_NAME" --wait=false >/dev/null 2>&1 || true
    "${kubectl[@]}" delete clusterrolebinding cancel-operator-test:kubelet-api-admin --ignore-not-found >/dev/null 2>&1 || true
  fi
  local pid name
  if [[ -f $nd/pids ]]; then
    while read -r pid name; do [[ $name == kubelet ]] && node_stop_pid "$pid"; done <"$nd/pids"
  fi
  # Whatever the kubelet left: its sandboxes and containers, through containerd.
  if [[ -S $sock ]] && ctr -a "$sock" version >/dev/null 2>&1; then
    local task
    for task in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr -a "$sock" -n k8s.io tasks kill -s SIGKILL "$task" >/dev/null 2>&1 || true
    done
    for task in $(ctr -a "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
      ctr -a "$sock" -n k8s.io tasks delete -f "$task" >/dev/null 2>&1 || true
    done
  fi
  if [[ -f $nd/pids ]]; then
    while read -r pid name; do [[ $name == containerd ]] && node_stop_pid "$pid"; done <"$nd/pids"
  fi
  # Shims and the processes of their containers (only those of this node's containerd).
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $sock" || true); do
    [[ $(tr '\0' ' ' </proc/"$pid"/cmdline 2>/dev/null) == *"-address $sock "* ]] || continue
    pkill -KILL -P "$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
  done
  # Network namespaces of pods the kubelet did not remove (and their veths).
  local ns
  for ns in "$nd"/containerd/state/io.containerd.grpc.v1.cri/netns/*; do
    [[ -e $ns ]] || continue
    umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null || true
  done
  # Mounts under the node's directory, deepest first.
  local m
  while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done < <(awk -v p="$nd/" 'index($5, p) == 1 {print $5}' /proc/self/mountinfo | sort -r)
  # The bridge (its veths went with their namespaces; any left go with it).
  for m in $(ip -o link show master "$NODE_BRIDGE" 2>/dev/null | awk '{sub(/@.*/, "", $2); print $2}'); do
    ip link del "$m" 2>/dev/null || true
  done
  ip link del "$NODE_BRIDGE" 2>/dev/null || true
  node_iptables_restore "$nd/before/iptables"
  # Kernel settings, as they were.
  local line
  if [[ -f $nd/before/sysctls ]]; then
    while IFS='=' read -r name line; do
      if [[ -n $line && $(sysctl -n "$name" 2>/dev/null) != "$line" ]]; then
        sysctl -qw "$name=$line" || true
      fi
    done <"$nd/before/sysctls"
  fi
  # The kubelet's cgroups, innermost first (empty once their processes are gone).
  local c
  for c in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d $c ]] || continue
    grep -qx "$(dirname "$c")/kubepods" "$nd/before/cgroups" 2>/dev/null && continue
    find "$c" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  # Directories outside the node's own that did not exist before.
  if [[ -f $nd/before/dirs ]]; then
    for m in "${NODE_SYSTEM_DIRS[@]}"; do
      if [[ -e $m ]] && ! grep -qx "$m" "$nd/before/dirs"; then rm -rf "$m"; fi
    done
  fi
  if [[ ${1:-} != keep ]]; then
    rm -rf "$nd"
  else
    mv "$nd/before" "$nd/before.$$" 2>/dev/null || true
    rm -f "$nd/ready"
  fi
  log "node $NODE_NAME removed in $((SECONDS - t0))s"
}

# Deletes the iptables rules and chains of the node: the DNAT rule (by its
# comment) and KUBE-*/CNI-* chains, rules and jumps that were not there when
# the node started.
node_iptables_restore() {
  local before=$1 cmd t kind chain rest line
  local -a now
  mapfile -t now < <(node_iptables)
  # Rules first (jumps to the chains included), then the chains.
  for line in "${now[@]}"; do
    read -r cmd t kind chain rest <<<"$line"
    [[ $kind == -A ]] || continue
    [[ -f $before ]] && grep -qxF -- "$line" "$before" && continue
    [[ $line == *cancel-operator-node* || $line == *KUBE-* || $line == *CNI-* ]] || continue
    eval "$cmd -w 5 -t $t -D $chain $rest" 2>/dev/null || true
  done
  for line in "${now[@]}"; do
    read -r cmd t kind chain rest <<<"$line"
    [[ $kind == -N && ($chain == KUBE-* || $chain == CNI-*) ]] || continue
    [[ -f $before ]] && grep -qxF -- "$line" "$before" && continue
    "$cmd" -w 5 -t "$t" -F "$chain" 2>/dev/null || true
    "$cmd" -w 5 -t "$t" -X "$chain" 2>/dev/null || true
  done
}

node_cmd() {
  case ${1:-} in
  up) dir=$(readlink "$LINK" 2>/dev/null || true); node_up ;;
  down) dir=$(readlink "$LINK" 2>/dev/null || true); node_down ;;
  state) node_state ;;
  import) node_import "${2:-}" ;;
  *) die "usage: $0 node {up|down|state|import ARCHIVE}" ;;
  esac
}

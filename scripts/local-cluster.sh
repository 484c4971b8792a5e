#!/usr/bin/env bash
# A real single-node Kubernetes on this machine, from Debian: etcd, kube-apiserver,
# kube-controller-manager (Job controller, garbage collector, ...), kube-scheduler, kube-proxy,
# kubelet and containerd + runc with a CNI bridge. Binaries come from scripts/build-kube.sh.
# Cluster DNS: scripts/cluster-dns.py, CoreDNS's stand-in for this test node only (Debian carries
# no CoreDNS), answers <svc>.<ns>.svc.cluster.local and headless-Service pod records from the API
# server's Services and Endpoints on the bridge address; the kubelet points pods at it.
#
#   scripts/local-cluster.sh up              # start (idempotent); prints the kubeconfig path
#   scripts/local-cluster.sh load A.tar ...  # import docker-archive images into the node
#   scripts/local-cluster.sh down            # stop everything, unmount, delete the bridge
#   scripts/local-cluster.sh status          # exit 0 when the node is up and Ready
#
# Everything listens on loopback or on the cluster's own bridge (BRIDGE_IP below): the API
# server serves on the bridge address, so pods reach it through the `kubernetes` Service
# (kube-proxy) exactly as on any cluster. State lives in $STEPSHOT_CLUSTER_DIR
# (default /var/tmp/stepshot-cluster); hostPath volumes for examples go under its volumes/.
# `down` deletes that folder: the next `up` starts an empty cluster.
# Needs root. Recipe and traps: shared/docs/real-node.md.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${STEPSHOT_CLUSTER_DIR:-/var/tmp/stepshot-cluster}
BRIDGE=stepshot0
BRIDGE_IP=10.244.7.1
POD_CIDR=10.244.7.0/24
SERVICE_CIDR=10.96.7.0/24
API_PORT=6443
NODE=localhost          # the kubelet refuses a loopback node IP; by hostname the API server
                        # reaches it on localhost:10250 (kubectl logs/exec)
COMPONENTS=(etcd kube-apiserver cluster-dns containerd kube-controller-manager kube-scheduler kubelet kube-proxy)
CLUSTER_DOMAIN=cluster.local
# The DNS server's Python needs dnslib and the kubernetes client (requirements/test.txt).
PYTHON=${STEPSHOT_PYTHON:-$ROOT/.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
log() { echo "[local-cluster] $*" >&2; }

KUBECTL() { kubectl --kubeconfig "$DIR/admin.kubeconfig" "$@"; }
pid_of() { cat "$DIR/run/$1.pid" 2>/dev/null || true; }
# Alive and still ours: a stale pid file must not make us signal a reused PID.
alive() { local p; p=$(pid_of "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null && grep -qa -- "$1" "/proc/$p/cmdline"; }

ensure_packages() {
  local need=() p
  for p in containerd runc containernetworking-plugins iptables conntrack busybox-static openssl; do
    dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
  done
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq >&2 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2
  fi
}

spawn() {  # name, command...: start in the background, log to $DIR/log/name.log
  local name=$1; shift
  alive "$name" && return 0
  setsid "$@" >"$DIR/log/$name.log" 2>&1 < /dev/null &
  echo $! > "$DIR/run/$name.pid"
}

wait_until() {  # seconds, what, command...
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then log "timed out waiting for $what"; return 1; fi
    sleep 0.5
  done
}

kubeconfig() {  # file, user, token
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: stepshot-local
  cluster: {server: "https://$BRIDGE_IP:$API_PORT", certificate-authority: "$DIR/pki/apiserver.crt"}
users:
- name: $2
  user: {token: "$3"}
contexts:
- name: $2@stepshot-local
  context: {cluster: stepshot-local, user: $2}
current-context: $2@stepshot-local
EOF
}

# ------------------------------------------------------------------ configuration (once)
configure() {
  mkdir -p "$DIR"/{pki,run,log,etcd,containerd/root,containerd/state,cni/net.d,cni/ipam,kubelet,images}
  install -d -m 1777 "$DIR/volumes"
  if [ ! -f "$DIR/pki/sa.key" ]; then
    openssl genrsa -out "$DIR/pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$DIR/pki/sa.key" -pubout -out "$DIR/pki/sa.pub" 2>/dev/null
  fi
  if [ ! -f "$DIR/pki/tokens.csv" ]; then
    # token,user,uid,"groups": the control-plane components run as cluster admins (a local test
    # node); the kubelet is a real node identity under the Node authorizer.
    {
      echo "$(openssl rand -hex 16),admin,admin,\"system:masters\""
      echo "$(openssl rand -hex 16),system:kube-controller-manager,kcm,\"system:masters\""
      echo "$(openssl rand -hex 16),system:kube-scheduler,scheduler,\"system:masters\""
      echo "$(openssl rand -hex 16),system:kube-proxy,kube-proxy"
      echo "$(openssl rand -hex 16),system:node:$NODE,kubelet,\"system:nodes\""
      echo "$(openssl rand -hex 16),stepshot:cluster-dns,cluster-dns"
    } > "$DIR/pki/tokens.csv"
    chmod 600 "$DIR/pki/tokens.csv"
  fi
  local user token
  while IFS=, read -r token user _; do
    case $user in
      admin) kubeconfig "$DIR/admin.kubeconfig" admin "$token" ;;
      system:kube-controller-manager) kubeconfig "$DIR/controller-manager.kubeconfig" "$user" "$token" ;;
      system:kube-scheduler) kubeconfig "$DIR/scheduler.kubeconfig" "$user" "$token" ;;
      system:kube-proxy) kubeconfig "$DIR/kube-proxy.kubeconfig" "$user" "$token" ;;
      system:node:*) kubeconfig "$DIR/kubelet.kubeconfig" "$user" "$token" ;;
      stepshot:cluster-dns) kubeconfig "$DIR/cluster-dns.kubeconfig" "$user" "$token" ;;
    esac
  done < "$DIR/pki/tokens.csv"

  cat > "$DIR/containerd.toml" <<EOF
version = 2
root = "$DIR/containerd/root"
state = "$DIR/containerd/state"
[grpc]
  address = "$DIR/run/containerd.sock"
[ttrpc]
  address = "$DIR/run/containerd-ttrpc.sock"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/stepshot-pause:1"
  # This machine lacks CAP_SYS_RESOURCE: runc must not lower oom_score_adj.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
EOF
  cat > "$DIR/cni/net.d/10-stepshot.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "stepshot",
 "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false,
   "ipam": {"type": "host-local", "dataDir": "$DIR/cni/ipam",
            "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$BRIDGE_IP"}]],
            "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "loopback"}]}
EOF
  cat > "$DIR/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
evictionHard: {}
imageGCHighThresholdPercent: 100
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
serializeImagePulls: false
# Pods (dnsPolicy ClusterFirst) get this nameserver and the <ns>.svc.<domain> search list.
clusterDNS: [$BRIDGE_IP]
clusterDomain: $CLUSTER_DOMAIN
EOF
}

# ------------------------------------------------------------------ the pause (sandbox) image
pause_image() {  # a static busybox sleeping forever: a docker-archive, built once
  local out="$DIR/images/pause.tar" work
  [ -f "$out" ] && { echo "$out"; return; }
  work=$(mktemp -d)
  mkdir -p "$work/rootfs/bin"
  cp /bin/busybox "$work/rootfs/bin/busybox"
  tar -cf "$work/layer.tar" -C "$work/rootfs" .
  bash "$ROOT/scripts/docker-archive.sh" "$work/layer.tar" localhost/stepshot-pause:1 \
    '{"Entrypoint": ["/bin/busybox", "sleep", "2147483647"]}' "$out"
  rm -rf "$work"
  echo "$out"
}

load() {  # import docker-archives into containerd's k8s.io namespace
  local archive
  for archive in "$@"; do
    ctr --address "$DIR/run/containerd.sock" -n k8s.io image import "$archive" >&2
  done
}

# ------------------------------------------------------------------ up
up() {
  if status >/dev/null 2>&1; then echo "$DIR/admin.kubeconfig"; return 0; fi
  # Half a node (a crash, a killed session) is cleaned up first: every `up` that starts
  # anything starts from an empty cluster.
  down
  ensure_packages
  local bin; bin=$(bash "$ROOT/scripts/build-kube.sh")
  configure
  # The bridge exists before the API server so it can serve on the bridge address; the CNI
  # bridge plugin adopts it.
  ip link show "$BRIDGE" >/dev/null 2>&1 || ip link add "$BRIDGE" type bridge
  ip addr show dev "$BRIDGE" | grep -q "inet $BRIDGE_IP/" || ip addr add "$BRIDGE_IP/24" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  sysctl -qw net.ipv4.ip_forward=1 || true

  spawn etcd etcd --data-dir "$DIR/etcd" --listen-client-urls http://127.0.0.1:2379 \
    --advertise-client-urls http://127.0.0.1:2379 --listen-peer-urls http://127.0.0.1:2380 \
    --listen-metrics-urls http://127.0.0.1:2381
  spawn kube-apiserver "$bin/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
    --bind-address="$BRIDGE_IP" --advertise-address="$BRIDGE_IP" --secure-port=$API_PORT \
    --cert-dir="$DIR/pki" --token-auth-file="$DIR/pki/tokens.csv" --authorization-mode=Node,RBAC \
    --service-account-issuer=https://kubernetes.default.svc --service-account-key-file="$DIR/pki/sa.pub" \
    --service-account-signing-key-file="$DIR/pki/sa.key" --service-cluster-ip-range=$SERVICE_CIDR \
    --kubelet-preferred-address-types=Hostname --allow-privileged=false
  wait_until 60 "the API server" KUBECTL get --raw /readyz
  cluster_dns

  spawn containerd containerd --config "$DIR/containerd.toml"
  wait_until 30 "containerd" ctr --address "$DIR/run/containerd.sock" version
  load "$(pause_image)"

  spawn kube-controller-manager "$bin/kube-controller-manager" --kubeconfig="$DIR/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$DIR/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$DIR/controller-manager.kubeconfig" \
    --service-account-private-key-file="$DIR/pki/sa.key" --root-ca-file="$DIR/pki/apiserver.crt" \
    --controllers='*,-nodeipam,-cloud-node-lifecycle,-service,-route' --leader-elect=false \
    --bind-address=127.0.0.1 --port=0
  spawn kube-scheduler "$bin/kube-scheduler" --kubeconfig="$DIR/scheduler.kubeconfig" \
    --authentication-kubeconfig="$DIR/scheduler.kubeconfig" --authorization-kubeconfig="$DIR/scheduler.kubeconfig" \
    --leader-elect=false --bind-address=127.0.0.1 --port=0
  spawn kube-proxy "$bin/kube-proxy" --kubeconfig="$DIR/kube-proxy.kubeconfig" --hostname-override=$NODE \
    --proxy-mode=iptables --cluster-cidr=$POD_CIDR --conntrack-max-per-core=0 \
    --bind-address=127.0.0.1 --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256
  spawn kubelet "$bin/kubelet" --config="$DIR/kubelet.yaml" --kubeconfig="$DIR/kubelet.kubeconfig" \
    --container-runtime=remote --container-runtime-endpoint="unix://$DIR/run/containerd.sock" \
    --pod-infra-container-image=localhost/stepshot-pause:1 --root-dir="$DIR/kubelet" \
    --hostname-override=$NODE
  wait_until 120 "node $NODE Ready" node_ready
  # A pod needs its namespace's ServiceAccount, which the controller-manager creates.
  wait_until 60 "the default ServiceAccount" KUBECTL get serviceaccount default -n default
  log "up: kubeconfig $DIR/admin.kubeconfig"
  echo "$DIR/admin.kubeconfig"
}

cluster_dns() {  # before the kubelet: no pod may start without its nameserver answering
  "$PYTHON" -c 'import dnslib, kubernetes' 2>/dev/null ||
    { log "$PYTHON lacks dnslib or kubernetes (make setup; or set STEPSHOT_PYTHON)"; return 1; }
  # Least privilege: the DNS reads Services and Endpoints, nothing else.
  KUBECTL apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "stepshot:cluster-dns"}
rules:
- apiGroups: [""]
  resources: [services, endpoints]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "stepshot:cluster-dns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "stepshot:cluster-dns"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "stepshot:cluster-dns"}
EOF
  spawn cluster-dns "$PYTHON" "$ROOT/scripts/cluster-dns.py" serve --kubeconfig "$DIR/cluster-dns.kubeconfig" \
    --listen "$BRIDGE_IP" --port 53 --domain "$CLUSTER_DOMAIN"
  wait_until 30 "the cluster DNS" "$PYTHON" "$ROOT/scripts/cluster-dns.py" query \
    "kubernetes.default.svc.$CLUSTER_DOMAIN" --server "$BRIDGE_IP"
}

node_ready() {
  [ "$(KUBECTL get node $NODE -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

status() {
  local c
  for c in "${COMPONENTS[@]}"; do alive "$c" || { echo "$c: not running"; return 1; }; done
  node_ready || { echo "node $NODE: not Ready"; return 1; }
  echo "up: kubeconfig $DIR/admin.kubeconfig"
}

# ------------------------------------------------------------------ down
stop_pid() {  # name: SIGTERM, then SIGKILL after 15 s
  local p; p=$(pid_of "$1")
  if alive "$1"; then
    kill "$p" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$p" 2>/dev/null || true
  fi
  rm -f "$DIR/run/$1.pid"
}

clean_iptables() {  # what kube-proxy --cleanup leaves: the kubelet's KUBE-* chains and their jumps
  local t rule chain
  for t in nat filter mangle; do
    iptables -t "$t" -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j KUBE-' | grep -vE '^-A KUBE-' | sed 's/^-A/-D/' |
      while read -r rule; do eval iptables -t "$t" "$rule" || true; done || true
    for chain in $(iptables -t "$t" -S 2>/dev/null | awk '/^-N KUBE-/{print $2}'); do iptables -t "$t" -F "$chain"; done
    for chain in $(iptables -t "$t" -S 2>/dev/null | awk '/^-N KUBE-/{print $2}'); do iptables -t "$t" -X "$chain"; done
  done
}

TASKS_SUBDIR=containerd/state/io.containerd.runtime.v2.task/k8s.io   # one folder per running container

kill_containers() {  # a shim killed below leaves its container running: kill it by cgroup, remove those
  local id cg
  for id in $(ls "$DIR/$TASKS_SUBDIR" 2>/dev/null); do
    for cg in /sys/fs/cgroup/*/k8s.io/"$id" /sys/fs/cgroup/k8s.io/"$id"; do   # cgroup v1, v2
      [ -d "$cg" ] || continue
      xargs -r kill -9 < "$cg/cgroup.procs" 2>/dev/null || true
      for _ in $(seq 20); do rmdir "$cg" 2>/dev/null && break; sleep 0.25; done   # empty once they exit
    done
  done
}

down() {
  [ -d "$DIR" ] || { clean_iptables; return 0; }
  # Pods first, while the kubelet still runs, so their sandboxes are torn down properly.
  if alive kubelet && alive kube-apiserver; then
    KUBECTL delete pods --all -A --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
  fi
  local c
  for c in kubelet kube-proxy kube-scheduler kube-controller-manager; do stop_pid "$c"; done
  local bin; bin=$(ls -d "${STEPSHOT_CACHE:-$HOME/.cache/stepshot}"/kube-* 2>/dev/null | head -1)
  [ -n "$bin" ] && [ -x "$bin/kube-proxy" ] && "$bin/kube-proxy" --cleanup >/dev/null 2>&1 || true
  clean_iptables
  kill_containers
  stop_pid containerd
  # containerd's shims outlive it by design; they belong to this cluster's containerd root.
  pkill -9 -f "containerd-shim-runc-v2 -namespace k8s.io .*-address $DIR/run/containerd.sock" 2>/dev/null || true
  for c in cluster-dns kube-apiserver etcd; do stop_pid "$c"; done
  # Mounts the kubelet and containerd left (pod volumes, sandbox shm, rootfs), deepest first.
  awk -v d="$DIR/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
  for ns in $(ip netns list 2>/dev/null | awk '/^cni-/{print $1}'); do ip netns delete "$ns" || true; done
  ip link delete "$BRIDGE" 2>/dev/null || true
  if awk -v d="$DIR/" 'index($2, d) == 1 {found=1} END {exit !found}' /proc/mounts; then
    log "mounts are left under $DIR; not deleting it"; return 1
  fi
  rm -rf "$DIR"   # etcd, images, volumes: the next `up` starts an empty cluster
  log "down"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  load) shift; load "$@" ;;
  *) echo "usage: $0 up|down|status|load ARCHIVE..." >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Brings up a real Kubernetes control plane on 127.0.0.1: etcd, kube-apiserver
# (RBAC, generated CA/certs/service-account keys) and kube-controller-manager,
# optionally with the test node agent as the cluster's one node and scheduler.
#
# Progress goes to stderr; stdout carries only shell `export` lines, so
#   eval "$(tests/e2e/controlplane/up.sh --agent --nfs-map 10.0.0.5:/export=/tmp/src)"
# leaves KUBECONFIG, PATH (pinned kubectl/helm first) and VFXT_E2E_RUN_DIR set.
# Tear down with tests/e2e/controlplane/down.sh (reads VFXT_E2E_RUN_DIR or takes
# the run dir as its argument). Everything, logs included, stays in the run dir.
#
# Options:
#   --run-dir DIR          where certs, data, logs and pids go (default: a new
#                          ${TMPDIR:-/tmp}/vfxt-e2e.XXXXXX)
#   --agent                also start crates/test-node-agent (built with cargo)
#   --nfs-map S:/E=/DIR    passed to the agent (repeatable)
#   --exec-override P=BIN  passed to the agent (repeatable)
#   --node-name NAME       the agent's node name (default: e2e-node)
#   --no-build             do not run build.sh (fail if binaries are missing)
#
# Environment: VFXT_CACHE (build cache root, see build.sh), TMPDIR (run dir
# parent), VFXT_E2E_AGENT_BIN (a prebuilt test-node-agent; default: cargo
# build -p test-node-agent in the repo).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

run_dir=""
agent=0
node_name=e2e-node
build=1
agent_args=()
while (($#)); do
  case $1 in
  --run-dir) run_dir=$2; shift 2 ;;
  --agent) agent=1; shift ;;
  --nfs-map) agent_args+=(--nfs-map "$2"); shift 2 ;;
  --exec-override) agent_args+=(--exec-override "$2"); shift 2 ;;
  --node-name) node_name=$2; shift 2 ;;
  --no-build) build=0; shift ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//; /^set -euo/d' >&2; exit 0 ;;
  *) echo "up.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done

log() { echo "up.sh: $*" >&2; }

if ((build)); then
  "$here/build.sh" >&2
fi
bin=$(cp_pin_dir)/bin
for b in etcd kube-apiserver kube-controller-manager kubectl; do
  [[ -x $bin/$b ]] || { log "missing $bin/$b: run $here/build.sh"; exit 1; }
done

if [[ -z $run_dir ]]; then
  run_dir=$(mktemp -d "${TMPDIR:-/tmp}/vfxt-e2e.XXXXXX")
fi
mkdir -p "$run_dir"/{pki,logs,pids,etcd-data}
run_dir=$(cd "$run_dir" && pwd)
log "run dir: $run_dir"

# If anything below fails, stop what was started, but keep the logs.
on_exit() {
  local rc=$?
  if ((rc)); then
    log "start failed (rc=$rc); stopping; logs in $run_dir/logs"
    tail_logs
    "$here/down.sh" "$run_dir" >&2 || true
  fi
}
trap on_exit EXIT
tail_logs() {
  for f in "$run_dir"/logs/*.log; do
    [[ -f $f ]] || continue
    echo "----- last 50 lines of $f" >&2
    tail -n 50 "$f" >&2
  done
}

# ---- ports: random, unused now, below the kernel's ephemeral range (32768+)
# so an outgoing connection cannot grab one between the check and the bind;
# two runs picking the same one is unlikely and shows up as a bind error in
# the logs rather than a silent mix-up.
declare -A taken=()
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 12000))
    [[ -n ${taken[$p]-} ]] && continue
    if ! ss -Htln "sport = :$p" | grep -q .; then
      taken[$p]=1
      echo "$p"
      return 0
    fi
  done
  log "no free port found"
  return 1
}
etcd_client_port=$(free_port)
taken[$etcd_client_port]=1
etcd_peer_port=$(free_port)
taken[$etcd_peer_port]=1
api_port=$(free_port)
taken[$api_port]=1
kcm_port=$(free_port)
cat >"$run_dir/ports.env" <<EOF
ETCD_CLIENT_PORT=$etcd_client_port
ETCD_PEER_PORT=$etcd_peer_port
APISERVER_PORT=$api_port
KCM_PORT=$kcm_port
EOF

# ---- certificates and keys (openssl), fresh for every run.
pki=$run_dir/pki
service_cidr=10.96.0.0/24
service_ip=10.96.0.1
ssl() { openssl "$@" 2>>"$run_dir/logs/openssl.log"; }
ssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj "/CN=vfxt-e2e-ca" \
  -keyout "$pki/ca.key" -out "$pki/ca.crt"
# $1 name, $2 subject, $3 extensions (written to an extfile)
issue() {
  local name=$1 subj=$2 ext=$3
  printf '%s\n' "$ext" >"$pki/$name.ext"
  ssl req -newkey rsa:2048 -nodes -subj "$subj" -keyout "$pki/$name.key" -out "$pki/$name.csr"
  ssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 7 -extfile "$pki/$name.ext" -out "$pki/$name.crt"
}
issue apiserver "/CN=kube-apiserver" "$(printf '%s\n' \
  'basicConstraints=CA:FALSE' 'keyUsage=digitalSignature,keyEncipherment' 'extendedKeyUsage=serverAuth' \
  "subjectAltName=IP:127.0.0.1,IP:$service_ip,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local")"
client_ext=$(printf '%s\n' 'basicConstraints=CA:FALSE' 'keyUsage=digitalSignature,keyEncipherment' 'extendedKeyUsage=clientAuth')
# system:masters: the test's admin. The controller-manager gets its own
# identity so it runs under the RBAC roles the API server bootstraps for it.
issue admin "/O=system:masters/CN=vfxt-e2e-admin" "$client_ext"
issue controller-manager "/CN=system:kube-controller-manager" "$client_ext"
# The aggregation layer's front proxy (what kubeadm sets up): without it the
# components log a missing requestheader CA bundle forever.
ssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj "/CN=vfxt-e2e-front-proxy-ca" \
  -keyout "$pki/front-proxy-ca.key" -out "$pki/front-proxy-ca.crt"
ssl req -newkey rsa:2048 -nodes -subj "/CN=front-proxy-client" \
  -keyout "$pki/front-proxy-client.key" -out "$pki/front-proxy-client.csr"
printf '%s\n' "$client_ext" >"$pki/front-proxy-client.ext"
ssl x509 -req -in "$pki/front-proxy-client.csr" -CA "$pki/front-proxy-ca.crt" -CAkey "$pki/front-proxy-ca.key" \
  -CAcreateserial -days 7 -extfile "$pki/front-proxy-client.ext" -out "$pki/front-proxy-client.crt"
# Service-account token signing keys.
ssl genrsa -out "$pki/sa.key" 2048
ssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub"

api_url=https://127.0.0.1:$api_port
# $1 file, $2 cert name, $3 user name
kubeconfig() {
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: vfxt-e2e
  cluster:
    server: $api_url
    certificate-authority: $pki/ca.crt
users:
- name: $3
  user:
    client-certificate: $pki/$2.crt
    client-key: $pki/$2.key
contexts:
- name: vfxt-e2e
  context: {cluster: vfxt-e2e, user: $3}
current-context: vfxt-e2e
EOF
}
kubeconfig "$run_dir/admin.kubeconfig" admin vfxt-e2e-admin
kubeconfig "$run_dir/controller-manager.kubeconfig" controller-manager system:kube-controller-manager

# ---- processes. setsid + nohup: they survive this script and a closing
# terminal, and have no TTY to lose in CI.
start() {
  local name=$1
  shift
  log "starting $name"
  setsid nohup "$@" >"$run_dir/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$run_dir/pids/$name.pid"
}
# Fails if the process behind pids/$1.pid has exited.
alive() {
  local pid
  pid=$(cat "$run_dir/pids/$1.pid")
  kill -0 "$pid" 2>/dev/null || { log "$1 (pid $pid) exited; see $run_dir/logs/$1.log"; return 1; }
}
# $1 process name (must stay alive), $2 what is awaited, $3 seconds, rest: a
# command that succeeds when ready.
wait_for() {
  local name=$1 what=$2 secs=$3
  shift 3
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    alive "$name" || return 1
    if ((SECONDS >= deadline)); then
      log "$what not ready after ${secs}s"
      return 1
    fi
    sleep 0.5
  done
  log "$what ready"
}

start etcd "$bin/etcd" --name e2e --data-dir "$run_dir/etcd-data" \
  --listen-client-urls "http://127.0.0.1:$etcd_client_port" \
  --advertise-client-urls "http://127.0.0.1:$etcd_client_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster "e2e=http://127.0.0.1:$etcd_peer_port" \
  --listen-metrics-urls "" --log-level warn \
  --quota-backend-bytes $((2 * 1024 * 1024 * 1024))
wait_for etcd etcd 60 curl -fsS "http://127.0.0.1:$etcd_client_port/health"

start kube-apiserver "$bin/kube-apiserver" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
  --etcd-servers "http://127.0.0.1:$etcd_client_port" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --requestheader-client-ca-file "$pki/front-proxy-ca.crt" \
  --requestheader-allowed-names front-proxy-client \
  --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
  --requestheader-extra-headers-prefix X-Remote-Extra- \
  --proxy-client-cert-file "$pki/front-proxy-client.crt" --proxy-client-key-file "$pki/front-proxy-client.key" \
  --authorization-mode Node,RBAC --anonymous-auth=false \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$pki/sa.pub" \
  --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range "$service_cidr" \
  --allow-privileged=true \
  --endpoint-reconciler-type none \
  --profiling=false
api_readyz() {
  curl -fsS --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "$api_url/readyz"
}
wait_for kube-apiserver "kube-apiserver /readyz" 120 api_readyz

# --v=2: controllers log each sync, so a failed test shows what the job or
# garbage collector did (or did not do).
start kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig "$run_dir/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$run_dir/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$run_dir/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$kcm_port" \
  --use-service-account-credentials \
  --service-account-private-key-file "$pki/sa.key" \
  --root-ca-file "$pki/ca.crt" \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --service-cluster-ip-range "$service_cidr" \
  --controllers '*' \
  --leader-elect=false \
  --v=2
kcm_healthz() { curl -fsSk "https://127.0.0.1:$kcm_port/healthz"; }
wait_for kube-controller-manager "kube-controller-manager /healthz" 60 kcm_healthz

export KUBECONFIG=$run_dir/admin.kubeconfig
export PATH=$bin:$PATH
# Pods are refused until the serviceaccount controller has made "default":
# wait for it, so a test can create pods in namespace default right away.
default_sa() { kubectl get serviceaccount default -n default; }
wait_for kube-controller-manager "service account default/default" 60 default_sa

if ((agent)); then
  agent_bin=${VFXT_E2E_AGENT_BIN-}
  if [[ -z $agent_bin ]]; then
    log "building test-node-agent"
    (cd "$repo" && nice -n 10 cargo build -q -p test-node-agent >&2)
    agent_bin=${CARGO_TARGET_DIR:-$repo/target}/debug/test-node-agent
  fi
  mkdir -p "$run_dir/agent"
  start test-node-agent "$agent_bin" --kubeconfig "$KUBECONFIG" --node-name "$node_name" \
    --work-dir "$run_dir/agent" ${agent_args[@]+"${agent_args[@]}"}
  node_ready() {
    [[ $(kubectl get node "$node_name" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}') == True ]]
  }
  wait_for test-node-agent "node $node_name" 60 node_ready
fi

cat >"$run_dir/env" <<EOF
export VFXT_E2E_RUN_DIR=$run_dir
export KUBECONFIG=$KUBECONFIG
export PATH=$bin:\$PATH
EOF
log "up; logs in $run_dir/logs; tear down with: $here/down.sh $run_dir"
cat "$run_dir/env"

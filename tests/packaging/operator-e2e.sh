#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The chart's operator Deployment, for real: helm installs charts/vfxt-ingest on the e2e control plane with
# the test node agent as the node (the image runs as the locally built vfxt-ingest), then:
#   1. the operator pod runs with the chart's flags and takes the chart's Lease under its pod name;
#   2. for an IngestJob (NFS source, 3 destination IPs all mapped to one dir) the operator writes status, an
#      Event, the pods' one ServiceAccount (no Role, no RoleBinding: they have no API rights) and the scan Job;
#   3. the IngestJob goes to Succeeded, the copy is identical to the source, and the operator's log has no
#      Forbidden: the chart's RBAC is enough for a whole run;
#   4. the same with destination mountOptions: the operator makes a PV + claim per server (the chart's
#      cluster-scoped PV rule) and the copy succeeds through them;
#      deleting that IngestJob runs the operator's finalizer: its PVs go, the data stays;
#   5. helm uninstall stops the operator.
# With --watch-namespaces, the chart is installed in its namespaced mode (watchNamespaces={ingest}, Roles
# instead of ClusterRoles) with worker defaults, and it also checks: no cluster-wide binding; the chart's
# worker defaults reach the pod templates; an IngestJob in an unwatched namespace is left alone.
# Ends with "N passed". Needs root (the agent bind-mounts volumes). Run time: about a minute.
set -euo pipefail
namespaced=0
case ${1:-} in
--watch-namespaces) namespaced=1 ;;
"") ;;
*) echo "operator-e2e.sh: unknown argument '$1' (only --watch-namespaces)" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=../e2e/lib.sh
source "$here/../e2e/lib.sh"
start=$SECONDS

(cd "$repo" && nice -n 10 cargo build -q -p vfxt-ingest) || fail "cargo build -p vfxt-ingest"
bin=${CARGO_TARGET_DIR:-$repo/target}/debug/vfxt-ingest
data=$(mktemp -d "${TMPDIR:-/tmp}/vfxt-operator-e2e.XXXXXX")
mkdir -p "$data/src/a/b" "$data/dst"
for i in $(seq 1 300); do echo "file $i" >"$data/src/a/f$i"; done
for i in $(seq 1 40); do echo "deep $i" >"$data/src/a/b/g$i"; done
head -c 3000000 /dev/urandom >"$data/src/a/b/big"
image=registry.invalid/vfxt-ingest

e2e_up --agent --nfs-map "10.0.0.5:/export=$data/src" \
  --nfs-map "10.1.1.101:/nfs=$data/dst" --nfs-map "10.1.1.102:/nfs=$data/dst" --nfs-map "10.1.1.103:/nfs=$data/dst" \
  --exec-override "$image=$bin"
passed=0
pass() { passed=$((passed + 1)); say "ok: $*"; }
op_ns=vfxt-ingest-system
op_logs() {
  local p
  for p in $(kubectl get pods -n "$op_ns" -o name 2>/dev/null); do "$repo/tests/e2e/pod-logs.sh" "$op_ns" "${p#pod/}" || true; done
}
e2e_on_failure() {
  kubectl get ij,jobs,pods -A -o wide || true
  kubectl get ij -n ingest -o yaml || true
  echo "----- operator log"; op_logs | tail -n 60
}

# The agent runs pods on the host network: give the metrics listener a free port.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mode_sets=()
if ((namespaced)); then
  kubectl create namespace ingest >/dev/null
  kubectl create namespace elsewhere >/dev/null
  mode_sets=(--set 'watchNamespaces={ingest}' --set worker.resources.requests.cpu=100m
    --set worker.resources.requests.memory=64Mi --set 'worker.tolerations[0].key=workload'
    --set 'worker.tolerations[0].operator=Exists')
fi
helm install vfxt-ingest "$repo/charts/vfxt-ingest" -n "$op_ns" --create-namespace \
  --set image.repository="$image" --set metrics.port="$port" --set logging.format=text \
  --set statusIntervalSeconds=1 --set claims.url="http://127.0.0.1:$port" "${mode_sets[@]}" >/dev/null ||
  fail "helm install"
if ((namespaced)) && kubectl get clusterrolebinding vfxt-ingest >/dev/null 2>&1; then
  fail "watchNamespaces mode has a cluster-wide binding"
fi
wait_until 60 "operator pod Running" sh -c "kubectl get pods -n $op_ns -o jsonpath='{.items[0].status.phase}' | grep -qx Running"
pod=$(kubectl get pods -n "$op_ns" -o jsonpath='{.items[0].metadata.name}')
wait_until 30 "Lease vfxt-ingest-leader held by $pod" \
  sh -c "kubectl get lease vfxt-ingest-leader -n $op_ns -o jsonpath='{.spec.holderIdentity}' | grep -qx $pod"
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null || fail "operator /healthz on the chart's metrics port"
pass "operator pod $pod runs with the chart's flags, serves /healthz on port $port and holds the chart's Lease"

((namespaced)) || kubectl create namespace ingest >/dev/null
wait_until 60 "default service account in ingest" kubectl get serviceaccount default -n ingest
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: ingest.vfxt.dev/v1alpha1
kind: IngestJob
metadata: {name: chart-e2e, namespace: ingest}
spec:
  source:
    nfs: {server: 10.0.0.5, path: /export}
  destination:
    nfs: {servers: [10.1.1.101, 10.1.1.102, 10.1.1.103], path: /nfs}
  workers: 3
  threadsPerWorker: 4
  shards: {target: 6}
  preserve: {owner: false, mode: true, times: true, xattrs: false, symlinks: true, hardlinks: true}
YAML
# What the chart's RBAC must allow, step by step, before any copying: status, Events, the pods' identity, the
# scan Job.
wait_until 60 "IngestJob status written by the operator" \
  sh -c "kubectl get ij chart-e2e -n ingest -o jsonpath='{.status.observedGeneration}' | grep -qx 1"
wait_until 60 "scan Job created" kubectl get job chart-e2e-r0-scan -n ingest
wait_until 30 "Event recorded on the IngestJob" \
  sh -c "kubectl get events -n ingest --field-selector involvedObject.name=chart-e2e -o name | grep -q ."
identity=$(kubectl get serviceaccounts,roles,rolebindings -n ingest -l ingest.vfxt.dev/job=chart-e2e -o name | sort | tr '\n' ' ')
want="serviceaccount/chart-e2e-workers "
[[ $identity == "$want" ]] || fail "expected the pods' one ServiceAccount (no Role, no RoleBinding), found: $identity"
pass "the operator wrote status, an Event, the pods' ServiceAccount (no Role or RoleBinding) and the scan Job"
if ((namespaced)); then
  tmpl=$(kubectl get job chart-e2e-r0-scan -n ingest -o jsonpath='{.spec.template.spec.containers[0].resources.requests.cpu} {.spec.template.spec.tolerations[0].key}')
  [[ $tmpl == "100m workload" ]] || fail "worker defaults not in the scan Job's pod template: '$tmpl'"
  pass "the chart's worker defaults reached the scan Job's pod template ($tmpl)"
  kubectl apply -f - >/dev/null <<'YAML'
apiVersion: ingest.vfxt.dev/v1alpha1
kind: IngestJob
metadata: {name: not-watched, namespace: elsewhere}
spec:
  source:
    nfs: {server: 10.0.0.5, path: /export}
  destination:
    nfs: {servers: [10.1.1.101], path: /nfs}
    subPath: never
YAML
fi

# The whole run: scan, copy and verify pods (with the identity the operator made for them), status to the end.
wait_until 180 "IngestJob finished" \
  sh -c "kubectl get ij chart-e2e -n ingest -o jsonpath='{.status.phase}' | grep -qx -e Succeeded -e Failed"
if op_logs | grep -i forbidden; then fail "the operator was refused an API call: the chart's RBAC misses a rule"; fi
# The scan and copy pods talk only to the operator's endpoint (the plan, claims): none was refused.
if cat "$e2e_run_dir"/agent/pods/ingest_*/containers/*/log | grep -i forbidden; then
  fail "a scan/copy pod was refused by the operator's endpoint"
fi
phase=$(kubectl get ij chart-e2e -n ingest -o jsonpath='{.status.phase}')
[[ $phase == Succeeded ]] || fail "IngestJob ended $phase: $(kubectl get ij chart-e2e -n ingest -o jsonpath='{.status.message}')"
diff -r "$data/src" "$data/dst" >/dev/null || fail "destination differs from source"
pass "IngestJob Succeeded through the chart's operator: 343 files identical, no Forbidden in its or its pods' logs"
if ((namespaced)); then
  st=$(kubectl get ij not-watched -n elsewhere -o jsonpath='{.status}')
  [[ -z $st ]] || fail "an IngestJob outside watchNamespaces got a status: $st"
  pass "the IngestJob in an unwatched namespace was left alone"
fi

# With mount options the operator goes through a PersistentVolume + claim per server: the chart's
# cluster-scoped PV rule (rbac.persistentVolumes) for real.
kubectl apply -f - >/dev/null <<'YAML'
apiVersion: ingest.vfxt.dev/v1alpha1
kind: IngestJob
metadata: {name: chart-e2e-opts, namespace: ingest}
spec:
  source:
    nfs: {server: 10.0.0.5, path: /export}
  destination:
    nfs: {servers: [10.1.1.101, 10.1.1.102, 10.1.1.103], path: /nfs, mountOptions: [hard, vers=3]}
    subPath: with-options
  workers: 3
  threadsPerWorker: 4
  preserve: {owner: false, mode: true, times: true, xattrs: false, symlinks: true, hardlinks: true}
YAML
wait_until 180 "IngestJob with mountOptions finished" \
  sh -c "kubectl get ij chart-e2e-opts -n ingest -o jsonpath='{.status.phase}' | grep -qx -e Succeeded -e Failed"
phase=$(kubectl get ij chart-e2e-opts -n ingest -o jsonpath='{.status.phase}')
[[ $phase == Succeeded ]] || fail "IngestJob with mountOptions ended $phase: $(kubectl get ij chart-e2e-opts -n ingest -o jsonpath='{.status.message}')"
pvs=$(kubectl get pv -l ingest.vfxt.dev/job=chart-e2e-opts -o jsonpath='{range .items[*]}{.spec.mountOptions}{"\n"}{end}' | grep -c hard || true)
[[ $pvs == 3 ]] || fail "expected 3 PersistentVolumes with the mount options, found $pvs"
# Named <namespace>.<name>-dst-<i>: no other namespace's IngestJob can have the same names.
pv_names=$(kubectl get pv -l ingest.vfxt.dev/job=chart-e2e-opts -o name | sort | tr '\n' ' ')
[[ $pv_names == "persistentvolume/ingest.chart-e2e-opts-dst-0 persistentvolume/ingest.chart-e2e-opts-dst-1 persistentvolume/ingest.chart-e2e-opts-dst-2 " ]] ||
  fail "PersistentVolumes not named <namespace>.<name>-dst-<i>: $pv_names"
diff -r "$data/src" "$data/dst/with-options" >/dev/null || fail "with mountOptions: destination differs from source"
if op_logs | grep -i forbidden; then fail "the operator was refused an API call with mountOptions"; fi
pass "IngestJob with mountOptions Succeeded through 3 operator-made PVs (the chart's PV ClusterRole)"

# Deleting it: the operator's finalizer removes the PVs (objects only; Retain keeps the data), then the
# IngestJob goes.
kubectl delete ij chart-e2e-opts -n ingest --wait=false >/dev/null
wait_until 60 "IngestJob with mountOptions deleted" sh -c "! kubectl get ij chart-e2e-opts -n ingest"
# A PV still bound keeps its pv-protection finalizer until the garbage collector has removed its claim.
wait_until 60 "its PersistentVolumes deleted" \
  sh -c "! kubectl get pv -l ingest.vfxt.dev/job=chart-e2e-opts -o name | grep -q ."
diff -r "$data/src" "$data/dst/with-options" >/dev/null || fail "deleting the IngestJob touched the copied data"
if op_logs | grep -i forbidden; then fail "the operator was refused an API call in its finalizer"; fi
pass "deleting it: the finalizer removes its PVs (not the data), no Forbidden"

helm uninstall vfxt-ingest -n "$op_ns" --wait >/dev/null || fail "helm uninstall"
wait_until 30 "operator pod gone" sh -c "! kubectl get pods -n $op_ns -o name | grep -q ."
pass "helm uninstall stops the operator"
rm -rf "$data"
say "$passed passed, 0 failed ($((SECONDS - start)) s)"

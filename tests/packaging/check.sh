#!/usr/bin/env bash
# Packaging checks, for CI (tests/packaging/docker.sh, the image build, is separate: it is slower).
#   1. helm lint of charts/vfxt-ingest with several value sets; the values schema and the template guards
#      reject bad values;
#   2. cargo test -p packaging-tests: chart CRD == crds/ (== what the Rust types generate), chart version ==
#      workspace version, every example parses/validates with no unknown field, the Argo CD health check
#      (lua5.4) judges statuses built by the operator's own status code; kstatus (Flux, Go cli-utils) reads the
#      same statuses as expected;
#   3. manifests/ is what render-manifests.sh makes from the chart now;
#   4. on a real kube-apiserver (tests/e2e/controlplane, brought up and down here): the CRD installs and is
#      Established; the chart (all namespaces / watched namespaces / ServiceMonitor off) and manifests/ pass a
#      server-side dry run with strict field validation; manifests/ applied for real; the operator's service
#      account can do exactly what the operator does (kubectl auth can-i, impersonated) and not more; it can
#      server-side apply the per-IngestJob ServiceAccount/Role/RoleBinding (RBAC escalation check included)
#      and PV/PVC; the examples pass a server-side dry run (CRD schema + CEL rules);
#   5. examples/local-run.yaml runs with `vfxt-ingest run` on a small tree;
#   6. tests/packaging/operator-e2e.sh: the chart installed on the e2e rig with the test node agent runs an
#      IngestJob to Succeeded (operator flags, Lease, RBAC for the operator and for its pods).
# Prints each check; ends with "N passed". Needs root for apt (lua5.4) on first use.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
e2e=$repo/tests/e2e
chart=$repo/charts/vfxt-ingest
start=$SECONDS
passed=0
ok() { passed=$((passed + 1)); printf '[check %2d] ok  %4ds  %s\n' "$passed" "$((SECONDS - start))" "$*"; }
fail() { printf '[check] FAIL %s\n' "$*" >&2; exit 1; }
# expect_fail DESCRIPTION PATTERN COMMAND...: the command must fail and its output must match PATTERN.
expect_fail() {
    local what=$1 pattern=$2 out
    shift 2
    if out=$("$@" 2>&1); then fail "$what: succeeded, expected a failure"; fi
    grep -q -- "$pattern" <<<"$out" || fail "$what: failed without '$pattern': $out"
    ok "$what"
}

command -v lua5.4 >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lua5.4 >/dev/null; }
"$e2e/controlplane/build.sh" >/dev/null 2>&1 || { "$e2e/controlplane/build.sh"; fail "controlplane build"; }
# Pinned helm and kubectl first (the same bin dir up.sh puts on PATH).
bin=""
for d in "${VFXT_CACHE:-$HOME/.cache/vfxt-ingest}"/controlplane/*/bin; do
    [[ -x $d/helm && -x $d/kubectl && $d -nt ${bin:-/nonexistent} ]] && bin=$d
done
[[ -n $bin ]] || fail "no helm/kubectl built by tests/e2e/controlplane/build.sh"
export PATH=$bin:$PATH
K=(--kube-version 1.36.3)

# 1. lint and value guards
helm lint --quiet --strict "$chart" >/dev/null || fail "helm lint (defaults): $(helm lint --strict "$chart")"
ok "helm lint --strict (defaults)"
helm lint --quiet --strict "$chart" --set 'watchNamespaces={team-a,team-b}' --set replicas=2 \
    --set metrics.serviceMonitor.enabled=true --set 'image.imagePullSecrets={acr}' \
    --set worker.nodeSelector.agentpool=ingest >/dev/null || fail "helm lint (watched namespaces, HA, ServiceMonitor)"
ok "helm lint --strict (watched namespaces, 2 replicas, ServiceMonitor, pull secret, worker pool)"
expect_fail "schema rejects logging.format=xml" "logging/format" helm template t "$chart" "${K[@]}" --set logging.format=xml
expect_fail "schema rejects an unknown value (typo)" "additional properties" helm template t "$chart" "${K[@]}" --set replica=2
expect_fail "2 replicas without leader election is refused" "needs leaderElection.enabled" \
    helm template t "$chart" "${K[@]}" --set replicas=2 --set leaderElection.enabled=false
out=$(helm template t "$chart" "${K[@]}" --set metrics.serviceMonitor.enabled=true)
if ! grep -q '^kind: ServiceMonitor' <<<"$out" || ! grep -q 't-vfxt-ingest-metrics' <<<"$out"; then
    fail "ServiceMonitor + metrics Service not rendered"
fi
ok "metrics.serviceMonitor.enabled renders a ServiceMonitor and its Service"
out=$(helm template t "$chart" "${K[@]}" --set grafana.dashboard.enabled=true --show-only templates/grafana-dashboard.yaml)
grep -q '^kind: ConfigMap' <<<"$out" && grep -q '^    grafana_dashboard: "1"' <<<"$out" ||
    fail "grafana.dashboard.enabled: no ConfigMap with the sidecar label"
# The dashboard is the block under `vfxt-ingest.json: |-`, indented four spaces: it must be the JSON file.
panels=$(awk '/^  vfxt-ingest.json: \|-$/ {on = 1; next} on { sub(/^    /, ""); print }' <<<"$out" |
    jq -e '.panels | length') || fail "grafana.dashboard.enabled: the dashboard in the ConfigMap does not parse"
ok "grafana.dashboard.enabled renders the dashboard ConfigMap ($panels panels, sidecar label)"
out=$(helm template t "$chart" "${K[@]}" --set 'watchNamespaces={team-a,team-b}')
[[ $(grep -c '^kind: Role$' <<<"$out") == 3 && $(grep -c '^kind: ClusterRole$' <<<"$out") == 2 ]] \
    || fail "watchNamespaces: expected 2 namespace Roles + the Lease Role and only the PV and TokenReview ClusterRoles"
ok "watchNamespaces renders a Role per namespace (+ Lease Role) and no cluster-wide job rights"

defaults=$(helm template t "$chart" "${K[@]}" --set worker.priorityClassName=batch-low \
    --set 'worker.imagePullSecrets[0].name=acr' --set worker.podLabels.team=render \
    --set worker.podAnnotations.note=m7 --show-only templates/deployment.yaml |
    awk '/name: VFXT_INGEST_WORKER_DEFAULTS/ {getline; sub(/^ *value: /, ""); print}')
jq -e 'fromjson | .priorityClassName == "batch-low" and .imagePullSecrets[0].name == "acr"
    and .labels.team == "render" and .annotations.note == "m7"' <<<"$defaults" >/dev/null ||
    fail "worker pod settings do not reach VFXT_INGEST_WORKER_DEFAULTS: $defaults"
ok "worker.priorityClassName, imagePullSecrets, podLabels and podAnnotations reach the operator's worker defaults"
claims_url() {
    helm template t "$chart" "${K[@]}" --namespace ops "$@" --show-only templates/deployment.yaml |
        awk '/name: VFXT_INGEST_CLAIMS_URL/ {getline; sub(/^ *value: /, ""); print}'
}
# Fully qualified, final dot: a worker's message per shard is not tried against each search domain first.
[[ $(claims_url) == '"http://t-vfxt-ingest-claims.ops.svc.cluster.local.:8080"' ]] ||
    fail "default claims URL is not the claims Service's fully qualified name: $(claims_url)"
[[ $(claims_url --set claims.clusterDomain=corp.example) == '"http://t-vfxt-ingest-claims.ops.svc.corp.example.:8080"' ]] ||
    fail "claims.clusterDomain not used: $(claims_url --set claims.clusterDomain=corp.example)"
[[ $(claims_url --set claims.url=http://10.0.0.4:8080) == '"http://10.0.0.4:8080"' ]] || fail "claims.url not used"
expect_fail "schema rejects claims.clusterDomain with a final dot" "clusterDomain" \
    helm template t "$chart" "${K[@]}" --set claims.clusterDomain=cluster.local.
ok "the claims URL is the Service's fully qualified name (cluster domain from claims.clusterDomain), or claims.url"

# 2. Rust-side checks
(cd "$repo" && nice -n 10 cargo test -q -p packaging-tests 2>&1) >"${TMPDIR:-/tmp}/packaging-tests.log" \
    || { cat "${TMPDIR:-/tmp}/packaging-tests.log"; fail "cargo test -p packaging-tests"; }
ok "cargo test -p packaging-tests ($(grep -o '[0-9]* passed' "${TMPDIR:-/tmp}/packaging-tests.log" | awk '{s+=$1} END {print s}') tests: chart CRD, versions, examples, Argo CD health.lua)"

# kstatus (what Flux's health checks use), in Go from sigs.k8s.io/cli-utils, on the same sample objects the
# Lua test judges (built by the operator's status code).
kbin=${VFXT_CACHE:-$HOME/.cache/vfxt-ingest}/kstatus/kstatus-check
if [[ ! -x $kbin || -n $(find "$here/kstatus" -newer "$kbin" -type f) ]]; then
    mkdir -p "$(dirname "$kbin")"
    (cd "$here/kstatus" && GOTOOLCHAIN=local GOFLAGS=-mod=mod nice -n 10 go build -o "$kbin" .) || fail "build tests/packaging/kstatus"
fi
samples=$(cd "$repo" && cargo run -q -p packaging-tests --bin sample-statuses) || fail "sample-statuses"
verdicts=$(python3 -c 'import json,sys
for l in sys.stdin: print(json.dumps(json.loads(l)["object"]))' <<<"$samples" | "$kbin" | cut -f1)
expected=$(python3 -c 'import json,sys
for l in sys.stdin: print(json.loads(l)["kstatus"])' <<<"$samples")
names=$(python3 -c 'import json,sys
for l in sys.stdin: print(json.loads(l)["name"])' <<<"$samples")
if [[ $verdicts != "$expected" ]]; then
    paste <(echo "$names") <(echo "$expected") <(echo "$verdicts") >&2
    fail "kstatus disagrees (name, expected, got)"
fi
ok "kstatus (cli-utils) reads $(wc -l <<<"$names") sample statuses as Flux should: $(paste -d= <(echo "$names") <(echo "$verdicts") | tr '\n' ' ')"

# 3. manifests fresh
"$here/render-manifests.sh" --check || fail "manifests/ is stale"
ok "manifests/ is fresh (render-manifests.sh --check)"

# 4. real API server
log=${TMPDIR:-/tmp}/packaging-check-up.log
out=$("$e2e/controlplane/up.sh" --no-build 2>"$log") || { grep "^up.sh" "$log"; fail "control plane did not come up (full log: $log)"; }
eval "$out"
run_dir=$VFXT_E2E_RUN_DIR
trap '"$e2e/controlplane/down.sh" --purge "$run_dir" >/dev/null 2>&1 || true' EXIT
ok "control plane up ($(kubectl version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -1))"

# (kubectl warns that the uint32/uint64 formats are informational; the API server ignores them.)
kubectl apply --server-side -f "$repo/crds/ingest.vfxt.dev_ingestjobs.yaml" >/dev/null 2>&1 || fail "CRD apply"
# Polled, not `kubectl wait --for=condition=Established`: that kubectl gives up at once ("accessor error:
# <nil>") when it reads the CRD before the API server has written any condition, which a busy machine shows.
established() {
  [[ $(kubectl get crd ingestjobs.ingest.vfxt.dev -o jsonpath='{.status.conditions[?(@.type=="Established")].status}') == True ]]
}
deadline=$((SECONDS + 30))
until established; do
  ((SECONDS < deadline)) || fail "CRD not Established after 30 s: $(kubectl get crd ingestjobs.ingest.vfxt.dev -o jsonpath='{.status.conditions}')"
  sleep 0.2
done
ok "CRD installs and is Established"

for ns in vfxt-ingest-system ingest team-a team-b other; do kubectl create namespace "$ns" >/dev/null; done
dry() { kubectl apply --server-side --dry-run=server --validate=strict -f - >"$run_dir/dry.log" 2>&1 || { cat "$run_dir/dry.log"; return 1; }; }
helm template vfxt-ingest "$chart" "${K[@]}" -n vfxt-ingest-system | dry || fail "dry run: chart defaults"
ok "server dry run: chart with defaults"
helm template ops "$chart" "${K[@]}" -n vfxt-ingest-system --set 'watchNamespaces={team-a,team-b}' --set replicas=2 \
    --set metrics.service.enabled=true --set 'image.imagePullSecrets={acr}' | dry || fail "dry run: watched namespaces"
ok "server dry run: chart with watched namespaces, 2 replicas, metrics Service"
# Every rule of the admin policy, in the default and in a namespace: the API server compiles and
# type-checks the admission policy's CEL on create, so a rule the chart renders wrong fails here.
helm template vfxt-ingest "$chart" "${K[@]}" -n vfxt-ingest-system --set-json 'policy={"admission": true,
    "default": {"servers": ["10.1.0.0/16", "nas.example.com", "fd00::/64"], "exportPaths": ["/exports/"],
      "images": ["myacr.azurecr.io/vfxt-ingest:*"], "allowServiceAccount": true, "allowRoot": false,
      "allowDacCapabilities": false, "maxWorkers": 32, "maxThreadsPerWorker": 64},
    "namespaces": {"team-a": {"servers": ["10.2.0.5"]}, "team-b": {}}}' | dry || fail "dry run: every policy rule"
ok "server dry run: the admin policy with every rule (its CEL compiles and type-checks)"
kubectl kustomize "$repo/manifests" | dry || fail "dry run: manifests/"
ok "server dry run: kubectl apply -k manifests/"
kubectl apply --server-side -k "$repo/manifests" >/dev/null || fail "apply -k manifests/"
ok "kubectl apply --server-side -k manifests/ (for real)"

notes=$(helm install h "$chart" -n helm-test --create-namespace --set 'watchNamespaces={team-a}' 2>&1) \
    || fail "helm install: $notes"
for want in "kubectl apply -f ingestjob.yaml" "rollout status deployment/h-vfxt-ingest"; do
    grep -q "$want" <<<"$notes" || fail "helm install: NOTES do not say '$want': $notes"
done
kubectl get deployment/h-vfxt-ingest -n helm-test >/dev/null || fail "helm install: no Deployment"
kubectl get role/h-vfxt-ingest -n team-a >/dev/null || fail "helm install: no Role in the watched namespace"
helm uninstall h -n helm-test --wait >/dev/null || fail "helm uninstall"
if kubectl get role/h-vfxt-ingest -n team-a >/dev/null 2>&1; then fail "helm uninstall left the Role in team-a"; fi
kubectl get crd ingestjobs.ingest.vfxt.dev >/dev/null || fail "helm uninstall removed the CRD (it must keep it)"
ok "helm install (NOTES name the next commands) and uninstall (keeps the CRD, removes the namespace Roles)"

sa=system:serviceaccount:vfxt-ingest-system:vfxt-ingest
can() { kubectl auth can-i --as="$sa" "$@" >/dev/null 2>&1; }
allowed=(
    "get ingestjobs.ingest.vfxt.dev -n ingest" "list ingestjobs.ingest.vfxt.dev -A" "watch ingestjobs.ingest.vfxt.dev -A"
    "patch ingestjobs.ingest.vfxt.dev --subresource=status -n ingest"
    "list jobs.batch -A" "watch jobs.batch -A" "create jobs.batch -n ingest" "delete jobs.batch -n ingest"
    "create tokenreviews.authentication.k8s.io"
    "list pods -A" "watch pods -A" "list configmaps -A" "watch configmaps -A" "delete configmaps -n ingest"
    "create serviceaccounts -n ingest" "patch serviceaccounts -n ingest"
    "create configmaps -n ingest" "patch configmaps -n ingest"
    "create persistentvolumeclaims -n ingest" "create persistentvolumes" "patch persistentvolumes"
    "list persistentvolumes" "delete persistentvolumes" "patch ingestjobs.ingest.vfxt.dev -n ingest"
    "create events.events.k8s.io -n ingest" "patch events.events.k8s.io -n ingest"
    "create leases.coordination.k8s.io -n vfxt-ingest-system"
    "update leases.coordination.k8s.io/vfxt-ingest-leader -n vfxt-ingest-system"
)
denied=(
    "get secrets -n ingest" "list secrets -A" "delete ingestjobs.ingest.vfxt.dev -n ingest"
    "update ingestjobs.ingest.vfxt.dev -n ingest" "update jobs.batch -n ingest" "patch jobs.batch -n ingest" "get persistentvolumes" "delete pods -n ingest"
    "create clusterroles.rbac.authorization.k8s.io" "escalate roles.rbac.authorization.k8s.io -n ingest"
    "create roles.rbac.authorization.k8s.io -n ingest" "create rolebindings.rbac.authorization.k8s.io -n ingest"
    "update leases.coordination.k8s.io/some-other-lease -n vfxt-ingest-system" "create pods -n ingest"
    "patch pods -n ingest" "get pods -n ingest" "create serviceaccounts --subresource=token -n ingest"
)
for a in "${allowed[@]}"; do
    # shellcheck disable=SC2086
    can $a || fail "operator service account may not: $a"
done
for d in "${denied[@]}"; do
    # shellcheck disable=SC2086
    if can $d; then fail "operator service account may, and should not: $d"; fi
done
ok "RBAC: operator may ${#allowed[@]} things it does, none of ${#denied[@]} it does not (auth can-i as $sa)"

# What the operator applies for each IngestJob, sent as the operator (server-side apply): apply of a
# missing object needs create. A plan chunk, as the operator stores a scan's.
kubectl --as="$sa" apply --server-side --field-manager=vfxt-ingest -f - >"$run_dir/as-operator.log" 2>&1 <<'YAML' || { cat "$run_dir/as-operator.log"; fail "operator cannot apply the per-IngestJob identity and volumes"; }
apiVersion: v1
kind: ServiceAccount
metadata: {name: ij-demo-workers, namespace: ingest}
automountServiceAccountToken: false
---
apiVersion: v1
kind: ConfigMap
metadata: {name: ij-demo-r0-plan-1, namespace: ingest}
data: {part-00001: "{}"}
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: ij-demo-dest-0}
spec:
  capacity: {storage: 1Pi}
  accessModes: [ReadWriteMany]
  persistentVolumeReclaimPolicy: Retain
  mountOptions: [hard, nconnect=8]
  nfs: {server: 10.0.1.11, path: /msazure}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: ij-demo-dest-0, namespace: ingest}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: ""
  volumeName: ij-demo-dest-0
  resources: {requests: {storage: 1Pi}}
YAML
ok "as the operator: server-side apply (create) of the pods' ServiceAccount, a plan chunk and PV/PVC"
expect_fail "as the operator: no Role is made (the operator grants nothing)" "forbidden" \
    kubectl --as="$sa" create role any -n ingest --verb=get --resource=configmaps --dry-run=server

helm template ops "$chart" "${K[@]}" -n vfxt-ingest-system --set 'watchNamespaces={team-a,team-b}' \
    | kubectl apply --server-side -f - >/dev/null || fail "apply chart with watched namespaces"
ops=system:serviceaccount:vfxt-ingest-system:ops-vfxt-ingest
kubectl auth can-i --as="$ops" create jobs.batch -n team-b >/dev/null || fail "watched namespace team-b: cannot create Jobs"
if kubectl auth can-i --as="$ops" create jobs.batch -n other >/dev/null 2>&1; then fail "unwatched namespace: may create Jobs"; fi
if kubectl auth can-i --as="$ops" list ingestjobs.ingest.vfxt.dev -A >/dev/null 2>&1; then fail "watched namespaces: may list cluster-wide"; fi
ok "watched namespaces: rights in team-a/team-b only, nothing cluster-wide but PVs"

examples=()
for f in "$repo"/examples/*.yaml; do
    case $(basename "$f") in local-run.yaml | namespace.yaml) ;; *) examples+=("$f") ;; esac
done
for f in "${examples[@]}"; do
    dry <"$f" || fail "example $(basename "$f") rejected by the API server"
done
ok "server dry run (CRD schema + CEL, strict fields): ${#examples[@]} examples: $(basename -a "${examples[@]}" | tr '\n' ' ')"
bad=$(sed 's#path: /msazure#path: msazure#' "$repo/examples/vfxt-3-nodes.yaml")
expect_fail "a broken example is rejected by the API server with the field named" "spec.destination.nfs.path" \
    kubectl apply --dry-run=server -f - <<<"$bad"

"$e2e/controlplane/down.sh" --purge "$run_dir" >/dev/null 2>&1
trap - EXIT
ok "control plane down"

# 5. the local example, for real
(cd "$repo" && nice -n 10 cargo build -q -p vfxt-ingest) || fail "cargo build -p vfxt-ingest"
demo=$(mktemp -d)
trap 'rm -rf "$demo"' EXIT
mkdir -p "$demo/source/d1/d2" "$demo/export"
for i in $(seq 1 200); do echo "file $i" >"$demo/source/d1/f$i"; done
head -c 2000000 /dev/urandom >"$demo/source/d1/d2/big"
for i in 1 2 3; do ln -sfn export "$demo/destination$i"; done
sed "s#/tmp/vfxt-demo#$demo#g" "$repo/examples/local-run.yaml" >"$demo/job.yaml"
"${CARGO_TARGET_DIR:-$repo/target}/debug/vfxt-ingest" run -q -f "$demo/job.yaml" --state "$demo/state" >"$demo/run.log" 2>&1 \
    || { cat "$demo/run.log"; fail "vfxt-ingest run examples/local-run.yaml"; }
diff -r "$demo/source" "$demo/export" >/dev/null || fail "local example: destination differs from source"
ok "examples/local-run.yaml: vfxt-ingest run copies and verifies a 201-file tree through 3 destinations"

# 6. the chart's operator for a whole IngestJob on the e2e rig (its own control plane + node agent)
"$here/operator-e2e.sh" >"${TMPDIR:-/tmp}/packaging-operator-e2e.log" 2>&1 \
    || { grep -v -e '^[IWE][0-9]' "${TMPDIR:-/tmp}/packaging-operator-e2e.log" | tail -n 60; fail "operator-e2e.sh"; }
ok "operator-e2e.sh: $(grep -c '] ok: ' "${TMPDIR:-/tmp}/packaging-operator-e2e.log") steps: the chart's operator (flags, Lease) runs an IngestJob to Succeeded with the chart's RBAC"
"$here/operator-e2e.sh" --watch-namespaces >"${TMPDIR:-/tmp}/packaging-operator-e2e-ns.log" 2>&1 \
    || { grep -v -e '^[IWE][0-9]' "${TMPDIR:-/tmp}/packaging-operator-e2e-ns.log" | tail -n 60; fail "operator-e2e.sh --watch-namespaces"; }
ok "operator-e2e.sh --watch-namespaces: $(grep -c '] ok: ' "${TMPDIR:-/tmp}/packaging-operator-e2e-ns.log") steps: Roles only in the watched namespace, worker defaults in the pod templates, other namespaces left alone"

echo "packaging checks: $passed passed, 0 failed ($((SECONDS - start)) s)"

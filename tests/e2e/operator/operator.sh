#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# The operator's end-to-end tests on the real control plane (issue 5, tests 1-6), one plane for all:
#  1. the API server accepts the generated CRD (crds/) and rejects bad IngestJobs, each with a message
#     naming the field;
#  2. the operator runs from `helm install charts/vfxt-ingest`, under the chart's own service account
#     and RBAC (and nothing more: checked with `kubectl auth can-i` both ways), in a namespace that
#     enforces Pod Security's restricted level; every IngestJob's pods run under baseline;
#  3. an IngestJob on a generated tree (nested dirs, modes, mtimes, owners, a symlink, a hard link) goes
#     Scanning -> Copying -> Verifying -> Succeeded; the destination is identical to the source; status
#     totals equal the tree; the worker pods' NFS volumes cover all three cluster IPs;
#  4. a copy worker killed (SIGKILL by pid) mid-copy: its shard is retried, the verification is clean;
#  5. the operator killed (SIGKILL) mid-job and restarted: the job finishes, no Job is created twice,
#     progress never goes backwards;
#  6. deleting the IngestJob removes its Jobs, pods and ConfigMaps, and no copied data;
# issue 12:
#  7. two IngestJobs in one namespace at different runs (0 and 2), started together, then a third one
#     after they finished: all Succeeded, none regresses, each keeps its plan ConfigMaps;
#  8. a finished IngestJob's pods deleted by hand and its failurePolicy edited: the verdict, counts and
#     completionTime stay, observedGeneration stays at the generation the run used;
#  9. FailJob with an entry that cannot be copied (a non-empty directory in the destination where
#     the source has a file, which is never deleted; exit 1: the shard fails without retries): the
#     run is Failed/ShardFailed, no verify Job is created, the entry is listed; the pods' full
#     reports (spec.report on the destination export) are read back with `vfxt-ingest report`.
# 10. ~200 one-file shards (a copy phase of many short claims): the status shows progress moving
#     during the phase, never going back.
# issue 13:
# 12. three IPs of one export, one node at a quarter of the others' capacity: Succeeded, every shard
#     completed once, identical (workers mount every IP and share one queue).
# 13. three IPs of one export, the third node stops answering mid-copy (its requests held, as a
#     hung NFS server behind a hard mount): Succeeded, identical; the status names the server
#     Unresponsive (ServersResponding False, a Warning Event); the pass's next Job does not mount it.
# issue 14:
# 14. spec.dryRun on a destination that holds a file of its own: Succeeded/DryRun, no copy Job,
#     nothing in the destination changed (every ctime stays), the verification counts what a pass
#     would create; then the real run (dryRun off, run 1) copies, identical.
# 15. a migration in three passes: a bulk copy, a delta pass after users changed the source, and a
#     final Mirror pass with Checksum on Changed after they deleted a file and a directory: each Succeeded and
#     identical; the final pass ran a prune Job, status.mirror says what it deleted, and
#     status.passes lists Copy, Copy, Mirror.
# issue 15:
# 16. the chart's admin policy locks namespace $pns (servers, export paths, images, service account,
#     root, workers, threads): an IngestJob breaking each rule is refused at admission, naming the
#     rule; with the admission policy's binding removed, the operator refuses each itself (Failed,
#     Ready False PolicyDenied naming the rule, a Warning Event, no children) and runs the allowed one.
# 17. the chart with two operator replicas: the leader hangs (SIGSTOP) mid-copy, then is killed; the
#     standby takes the Lease within its duration plus one retry after the last renewal, and the job
#     finishes Succeeded, identical, no Job re-created, every shard once (workers' messages that
#     reach a standby are passed on to the leader's address on the Lease).
# The source is read through a slow emulated node (FUSE, crates/e2e-tests' e2e-slow-nodes), as over NFS;
# tests 4 and 5 also write through three slow nodes, so a copy lasts long enough to kill something in
# the middle of it.
# Each test prints PASS/FAIL; the last line is "N passed, M failed"; exit status 1 if any failed.
# Usage: operator.sh [N...] (only tests N..., e.g. '1 2 3 6'); operator.sh --bench [FILES] (operator vs
# `vfxt-ingest run`); operator.sh --api-load [WORKERS...] (the operator's API requests/s with 100 and 500
# simulated claims workers by default). Needs root (the node agent bind-mounts
# volumes; FUSE mounts). Env: E2E_SOURCE_LATENCY_MS, E2E_SLOW_LATENCY_MS: the slow nodes'
# latency per operation (source: default 25 ms; destination nodes of tests 4, 5: 15 ms);
# E2E_OPERATOR_LOG: the operator's log filter (default info; "info,ingest_operator=debug" logs
# each reconcile, for finding where the benchmark's time goes).
# Tests and helpers run indirectly (run_test "$fn", wait_for "$@", traps), which shellcheck cannot follow.
# shellcheck disable=SC2317
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../../.." && pwd)
# shellcheck source=../lib.sh
source "$here/../lib.sh"
t_start=$SECONDS

# ---------------------------------------------------------------- helpers
passed=0 failed=0 failed_names=()
# run_test NAME FUNCTION: runs it, prints PASS/FAIL with its time.
# Tests to run: the numbers given on the command line, default all (later tests use earlier ones'
# objects: 3-5 need 2's operator, 6 deletes 3's IngestJob).
selected=()
run_test() {
  local name=$1 fn=$2 t0=$SECONDS
  if ((${#selected[@]})) && [[ " ${selected[*]} " != *" ${name%% *} "* ]]; then
    return 0
  fi
  say "---- $name"
  if "$fn"; then
    passed=$((passed + 1))
    echo "PASS $name ($((SECONDS - t0)) s)"
  else
    failed=$((failed + 1))
    failed_names+=("$name")
    echo "FAIL $name ($((SECONDS - t0)) s)"
  fi
}
# bad MESSAGE: the reason a check failed (the test function then returns 1).
bad() { say "  check failed: $*"; }
# wait_for SECONDS WHAT COMMAND...: like lib.sh's wait_until, but returns 1 instead of exiting.
wait_for() {
  local secs=$1 what=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      bad "timed out after ${secs}s waiting for: $what"
      return 1
    fi
    sleep 0.5
  done
  say "  ok: $what"
}
ij_json() { kubectl get ij "$1" -n "$ns" -o json; }
ij_phase() { kubectl get ij "$1" -n "$ns" -o jsonpath='{.status.phase}'; }
phase_is() { [[ $(ij_phase "$1") == "$2" ]]; }
# Pods and Jobs of an IngestJob, found by the label the operator puts on every child.
children() { kubectl get "$1" -n "$ns" -l "ingest.vfxt.dev/job=$2" -o json; }
pod_dir() { echo "$e2e_run_dir/agent/pods/${1}_${2}_"*; }
op_logs() {
  local f
  for f in "$e2e_run_dir/agent/pods/${op_ns}_"*/containers/*/log; do [[ -f $f ]] && cat "$f"; done
}
on_failure() {
  kubectl get ij,jobs,pods,configmaps -n "$ns" -o wide || true
  kubectl get pods -n "$op_ns" -o wide || true
  kubectl get ij -n "$ns" -o yaml | grep -A60 '^  status:' || true
  echo "----- operator log (last 60 lines)"
  op_logs | tail -n 60
  local f
  for f in "$e2e_run_dir"/agent/pods/"$ns"_*/containers/*/log; do
    echo "----- $f" && tail -n 15 "$f"
  done
}

# ij_yaml NAME SOURCE_SUBPATH DEST_EXPORT [EXTRA_SPEC_YAML]: an IngestJob copying the source's
# SUBPATH to DEST_EXPORT/NAME on all three cluster IPs. Env: ij_source (default the slow filer
# 10.0.0.5:/export), ij_dest_subpath (default NAME), ij_threads (default 2), ij_shards (default 6;
# "auto": the planner's own count), ij_failure_policy, ij_verify (default Metadata).
ij_yaml() {
  local shards="  shards: {target: ${ij_shards:-6}}"
  [[ ${ij_shards-} == auto ]] && shards=""
  cat <<YAML
apiVersion: ingest.vfxt.dev/v1alpha1
kind: IngestJob
metadata: {name: $1, namespace: $ns}
spec:
  source:
    nfs: ${ij_source:-{server: 10.0.0.5, path: /export\}}
    subPath: $2
  destination:
    nfs: {servers: [${ips[0]}, ${ips[1]}, ${ips[2]}], path: $3}
    subPath: ${ij_dest_subpath:-$1}
  workers: ${ij_workers:-3}
  threadsPerWorker: ${ij_threads:-2}
$shards
  failurePolicy: ${ij_failure_policy:-{retriesPerShard: 3\}}
  verify: {mode: ${ij_verify:-Metadata}}
${4-}
YAML
}
# ij_apply: kubectl apply of ij_yaml (same arguments).
ij_apply() { ij_yaml "$@" | kubectl apply -f - >/dev/null; }

# watch_ij NAME: records every status the API server sends for the IngestJob, one line each:
# "phase files bytes" (the watch sees every write, so a phase held for a moment is not missed).
watch_ij() {
  # A list watch by name: it starts before the object exists, so no early status is missed.
  kubectl get ij -n "$ns" --field-selector "metadata.name=$1" -w --output-watch-events=false \
    -o jsonpath='{.status.phase} {.status.progress.files} {.status.progress.bytes}{"\n"}' \
    >"$data/watch-$1" 2>"$data/watch-$1.err" &
}
# watched_to_end NAME: the watch of NAME has recorded the phase the IngestJob ended in (what the
# checks of the recorded statuses read is complete).
watched_to_end() { [[ $(awk 'NF { last = $1 } END { print last }' "$data/watch-$1") == "$(ij_phase "$1")" ]]; }
# Distinct phases in order (Pending and the empty pre-status dropped), space-separated.
phases_seen() {
  awk 'NF && $1 != "Pending" && $1 != prev { printf "%s%s", sep, $1; sep = " "; prev = $1 }' "$data/watch-$1"
}
# Progress must never go backwards: prints the first regression, returns 1 if there is one.
progress_monotonic() {
  awk '$2 != "" {
    if ($2 + 0 < f || $3 + 0 < b) { printf "progress went back from %d files/%d bytes to %d/%d\n", f, b, $2, $3; bad = 1; exit }
    f = $2 + 0; b = $3 + 0 }
    END { exit bad }' "$data/watch-$1"
}

# gen_tree DIR FILES: nested dirs, varied sizes, modes, owners and mtimes, an empty dir, a symlink
# (relative, dangling-safe) and a hard link.
gen_tree() {
  local d=$1 n=$2 i
  mkdir -p "$d/a/b/c" "$d/d/e" "$d/empty" "$d/sp ace"
  for ((i = 1; i <= n; i++)); do
    case $((i % 4)) in
    0) printf 'file %d\n' "$i" >"$d/a/f$i" ;;
    1) head -c $((i * 97)) /dev/urandom >"$d/a/b/c/g$i" ;;
    2) head -c $((i * 31)) /dev/urandom >"$d/d/e/h$i" ;;
    3) : >"$d/sp ace/empty$i" ;;
    esac
  done
  head -c 2000000 /dev/urandom >"$d/d/big.bin"
  chmod 600 "$d/a/f4" "$d/d/big.bin"
  chmod 751 "$d/a/b"
  chmod 2775 "$d/d/e"
  chown 1234:2345 "$d/a/f8" "$d/d/e"
  ln -s ../a/f4 "$d/d/link-to-f4"
  ln "$d/a/f8" "$d/d/hard-f8"
  touch -h -d '2020-02-03 04:05:06.123456789' "$d/d/link-to-f4"
  touch -d '2019-01-02 03:04:05.5' "$d/a/f12" "$d/d/big.bin"
  # Directory times last: creating entries above changed them.
  touch -d '2018-06-07 08:09:10' "$d/a/b/c" "$d/empty" "$d/a" "$d"
}
# tree_listing DIR: one line per entry with what "identical" means here: type, mode, owner, size,
# mtime (ns), link target, link count.
tree_listing() { (cd "$1" && find . -printf '%P|%y|%m|%U:%G|%s|%T@|%l|%n\n' | LC_ALL=C sort); }
# same_tree SRC DST: diff -r plus the listing; prints the differences.
same_tree() {
  diff -r --no-dereference "$1" "$2" >&2 || return 1
  diff <(tree_listing "$1") <(tree_listing "$2") >&2
}
# The tree's totals as the scanner counts them: non-directories (regular files, symlinks, ...) per
# path, directories including the root, bytes of regular files with a hard-linked inode once.
tree_totals() {
  local files dirs bytes
  files=$(find "$1" ! -type d | wc -l)
  dirs=$(find "$1" -type d | wc -l)
  bytes=$(find "$1" -type f -printf '%i %s\n' | sort -u | awk '{ s += $2 } END { print s + 0 }')
  echo "$files $dirs $bytes"
}

# ---------------------------------------------------------------- 1. CRD + validation
crd_established() {
  [[ $(kubectl get crd ingestjobs.ingest.vfxt.dev -o jsonpath='{.status.conditions[?(@.type=="Established")].status}') == True ]]
}
rejected=0
# reject WHAT FIELD SPEC: creating an IngestJob with SPEC (YAML flow style) must fail, naming FIELD.
reject() {
  local what=$1 field=$2 spec=$3 out
  if out=$(printf 'apiVersion: ingest.vfxt.dev/v1alpha1\nkind: IngestJob\nmetadata: {name: bad, namespace: %s}\nspec: %s\n' \
    "$ns" "$spec" | kubectl create -f - 2>&1); then
    kubectl delete ij bad -n "$ns" --wait=false >/dev/null 2>&1
    bad "$what: accepted ($spec)"
    return 1
  fi
  if ! grep -qF -- "$field" <<<"$out"; then
    bad "$what: rejected, but the message does not name $field: $out"
    return 1
  fi
  rejected=$((rejected + 1))
  say "  rejected ($what): ${out#*: }"
}
# reject_change WHAT FIELD PATCH: a merge patch of the existing IngestJob 'valid' must fail, naming FIELD.
reject_change() {
  local what=$1 field=$2 patch=$3 out
  if out=$(kubectl patch ij valid -n "$ns" --type merge -p "$patch" 2>&1); then
    bad "$what: accepted ($patch)"
    return 1
  fi
  grep -qF -- "$field" <<<"$out" || { bad "$what: message does not name $field: $out"; return 1; }
  rejected=$((rejected + 1))
  say "  rejected ($what): ${out#*: }"
}
test_1_crd_validation() {
  kubectl create -f "$repo/crds/" >/dev/null || { bad "kubectl create -f crds/"; return 1; }
  wait_for 30 "CRD ingestjobs.ingest.vfxt.dev Established" crd_established || return 1
  local s='source: {nfs: {server: 10.0.0.5, path: /export}}'
  local d='destination: {nfs: {servers: [10.1.1.101, 10.1.1.102], path: /nfs}}'
  local r=0
  reject "no destination" "spec.destination" "{$s}" || r=1
  reject "no destination server" "spec.destination.nfs.servers" "{$s, destination: {nfs: {servers: [], path: /nfs}}}" || r=1
  reject "duplicate servers" "spec.destination.nfs.servers" "{$s, destination: {nfs: {servers: [10.1.1.101, 10.1.1.101], path: /nfs}}}" || r=1
  reject "bad server name" "spec.destination.nfs.servers" "{$s, destination: {nfs: {servers: [10.1.1.101, 'Bad_Host!'], path: /nfs}}}" || r=1
  reject "bad source server" "spec.source.nfs.server" "{source: {nfs: {server: 'nfs server', path: /export}}, $d}" || r=1
  reject "relative destination path" "spec.destination.nfs.path" "{$s, destination: {nfs: {servers: [10.1.1.101], path: nfs}}}" || r=1
  reject "destination path with .." "spec.destination.nfs.path" "{$s, destination: {nfs: {servers: [10.1.1.101], path: /nfs/../etc}}}" || r=1
  reject "absolute source subPath" "spec.source.subPath" "{source: {nfs: {server: 10.0.0.5, path: /export}, subPath: /etc}, $d}" || r=1
  reject "destination subPath with .." "spec.destination.subPath" "{$s, destination: {nfs: {servers: [10.1.1.101], path: /nfs}, subPath: a/../../b}}" || r=1
  reject "source both nfs and pvc" "spec.source" "{source: {nfs: {server: 10.0.0.5, path: /export}, pvc: {claimName: c}}, $d}" || r=1
  reject "workers 0" "spec.workers" "{$s, $d, workers: 0}" || r=1
  reject "threads 0" "spec.threadsPerWorker" "{$s, $d, threadsPerWorker: 0}" || r=1
  reject "threads 5000" "spec.threadsPerWorker" "{$s, $d, threadsPerWorker: 5000}" || r=1
  reject "threads fast" "spec.threadsPerWorker" "{$s, $d, threadsPerWorker: fast}" || r=1
  reject "bad verify mode" "spec.verify.mode" "{$s, $d, verify: {mode: Fast}}" || r=1
  reject "bad failure action" "spec.failurePolicy.action" "{$s, $d, failurePolicy: {action: Retry}}" || r=1
  reject "retries out of range" "spec.failurePolicy.retriesPerShard" "{$s, $d, failurePolicy: {retriesPerShard: 101}}" || r=1
  reject "shard target 0" "spec.shards.target" "{$s, $d, shards: {target: 0}}" || r=1
  reject "misspelt field" "spec.wrokers" "{$s, $d, wrokers: 3}" || r=1
  # A valid object is accepted and defaulted by the API server; then the immutable fields.
  printf 'apiVersion: ingest.vfxt.dev/v1alpha1\nkind: IngestJob\nmetadata: {name: valid, namespace: %s}\nspec: {%s, %s}\n' \
    "$ns" "$s" "$d" | kubectl create -f - >/dev/null || { bad "a valid IngestJob was rejected"; return 1; }
  local defaults
  defaults=$(kubectl get ij valid -n "$ns" -o jsonpath='{.spec.threadsPerWorker} {.spec.verify.mode} {.spec.failurePolicy.retriesPerShard}')
  [[ $defaults == "16 Metadata 3" ]] || { bad "defaults threadsPerWorker/verify.mode/retriesPerShard: '$defaults', want '16 Metadata 3'"; r=1; }
  reject_change "source changed after creation" "spec.source" '{"spec":{"source":{"subPath":"elsewhere"}}}' || r=1
  reject_change "destination changed after creation" "spec.destination" '{"spec":{"destination":{"nfs":{"servers":["10.1.1.103"]}}}}' || r=1
  # The immutability rules must not freeze the whole spec: a new run is a legitimate change.
  kubectl patch ij valid -n "$ns" --type merge -p '{"spec":{"run":1}}' >/dev/null || { bad "bumping spec.run was rejected"; r=1; }
  kubectl delete ij valid -n "$ns" >/dev/null
  say "  $rejected bad IngestJobs/changes rejected, each naming its field"
  ((rejected >= 10)) || { bad "only $rejected rejections"; r=1; }
  return "$r"
}

# ---------------------------------------------------------------- 2. helm install, chart RBAC
# Every verb the chart grants the operator: VERB RESOURCE[.GROUP][/NAME], as the chart's rules read
# (ingestjobs/status.ingest.vfxt.dev is the status subresource).
operator_may=()
init_operator_may() {
  local v
  operator_may=()
  for v in get list watch patch; do operator_may+=("$v ingestjobs.ingest.vfxt.dev"); done
  operator_may+=("patch ingestjobs/status.ingest.vfxt.dev")
  for v in list watch create delete; do operator_may+=("$v jobs.batch"); done
  for v in list watch; do operator_may+=("$v pods"); done
  for v in list watch delete get create patch; do operator_may+=("$v configmaps"); done
  for v in create patch; do
    operator_may+=("$v serviceaccounts" "$v persistentvolumeclaims" "$v events.events.k8s.io")
  done
  for v in create patch list delete; do operator_may+=("$v persistentvolumes"); done
  operator_may+=("create tokenreviews.authentication.k8s.io" "create leases.coordination.k8s.io"
    "get leases.coordination.k8s.io/vfxt-ingest-leader" "update leases.coordination.k8s.io/vfxt-ingest-leader")
}
# can_i_as_operator VERB KEY: kubectl auth can-i for one operator_may line, in the namespace it is for.
can_i_as_operator() {
  local verb=$1 key=$2 args=()
  case $key in
  */status.*) args=("${key%%/*}.${key#*.}" --subresource=status -n "$ns") ;;
  persistentvolumes | tokenreviews.*) args=("$key") ;;
  leases.*) args=("$key" -n "$op_ns") ;;
  *) args=("$key" -n "$ns") ;;
  esac
  can_i "$verb" "${args[@]}"
}
op_pod=""
op_sa=""
op_running() {
  [[ $(kubectl get pods -n "$op_ns" -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | sort -u) == Running ]]
}
can_i() { kubectl auth can-i "$@" --as="system:serviceaccount:$op_ns:$op_sa" 2>/dev/null; }
test_2_helm_install() {
  # On a fresh cluster helm installs the chart's own copy of the CRD: it must be the generated one that
  # test 1 checked.
  diff -u "$repo/crds/ingest.vfxt.dev_ingestjobs.yaml" "$repo/charts/vfxt-ingest/crds/ingest.vfxt.dev_ingestjobs.yaml" >&2 ||
    { bad "charts/vfxt-ingest/crds differs from crds/ (regenerate the chart's copy)"; return 1; }
  # The agent runs pods on the host network: the metrics listener needs a free port.
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # The operator's namespace enforces Pod Security's restricted level: its pod must pass it.
  kubectl create namespace "$op_ns" >/dev/null 2>&1 || true
  kubectl label --overwrite namespace "$op_ns" pod-security.kubernetes.io/enforce=restricted \
    pod-security.kubernetes.io/enforce-version=latest >/dev/null || { bad "label $op_ns"; return 1; }
  # The levels are enforced here: a pod over each one is refused (so the passes below mean something).
  local refused
  refused=$(kubectl run psa-probe -n "$op_ns" --image=busybox --dry-run=server -o name 2>&1) &&
    { bad "a pod that runs as root was admitted in $op_ns (restricted)"; return 1; }
  grep -q 'violates PodSecurity "restricted' <<<"$refused" || { bad "no PodSecurity refusal in $op_ns: $refused"; return 1; }
  refused=$(kubectl run psa-probe -n "$ns" --image=busybox --privileged --dry-run=server -o name 2>&1) &&
    { bad "a privileged pod was admitted in $ns (baseline)"; return 1; }
  grep -q 'violates PodSecurity "baseline' <<<"$refused" || { bad "no PodSecurity refusal in $ns: $refused"; return 1; }
  say "  Pod Security enforced: restricted in $op_ns, baseline in $ns"
  helm install vfxt-ingest "$repo/charts/vfxt-ingest" -n "$op_ns" --create-namespace \
    --set image.repository="$image" --set metrics.port="$port" --set logging.format=text \
    --set statusIntervalSeconds="${E2E_STATUS_INTERVAL:-1}" --set claims.url="http://127.0.0.1:$port" \
    --set-json "logging.level=$(jq -cn --arg l "${E2E_OPERATOR_LOG:-info}" '$l')" \
    --set-json "policy.namespaces={\"$pns\": $locked_rules}" >/dev/null || { bad "helm install"; return 1; }
  wait_for 90 "operator pod Running" op_running || return 1
  op_pod=$(kubectl get pods -n "$op_ns" -o jsonpath='{.items[0].metadata.name}')
  op_sa=$(kubectl get pod "$op_pod" -n "$op_ns" -o jsonpath='{.spec.serviceAccountName}')
  say "  operator pod $op_pod, service account $op_sa"
  [[ $op_sa == vfxt-ingest ]] || { bad "operator runs as service account '$op_sa', want the chart's vfxt-ingest"; return 1; }
  wait_for 30 "operator /healthz on port $port" curl -fsS "http://127.0.0.1:$port/healthz" || return 1
  wait_for 30 "the chart's Lease held by $op_pod" \
    sh -c "kubectl get lease vfxt-ingest-leader -n $op_ns -o jsonpath='{.spec.holderIdentity}' | grep -qx $op_pod"
  # The chart grants exactly what the operator's work needs (each rule's why is in
  # templates/rbac.yaml): every verb asked of the API server as the operator, ...
  local r=0 q words
  init_operator_may
  for q in "${operator_may[@]}"; do
    read -ra words <<<"$q" # no globbing of the words
    [[ $(can_i_as_operator "${words[@]}") == yes ]] || { bad "the chart's service account may not: $q"; r=1; }
  done
  # ... nothing else granted (the chart's roles, flattened, are this list) ...
  local granted
  granted=$({
    kubectl get clusterroles -l app.kubernetes.io/instance=vfxt-ingest -o json
    kubectl get roles -n "$op_ns" -l app.kubernetes.io/instance=vfxt-ingest -o json
  } | jq -r '.items[].rules[] | . as $r | .resources[] as $res | $r.verbs[] as $v
      | "\($v) \($res)\(if $r.apiGroups[0] == "" then "" else "." + $r.apiGroups[0] end)\(if $r.resourceNames then "/" + ($r.resourceNames | join(",")) else "" end)"' | sort -u)
  diff <(echo "$granted") <(printf '%s\n' "${operator_may[@]}" | sort -u) >&2 || { bad "the chart grants other verbs than the checked list (< granted, > checked)"; r=1; }
  # ... and none of the neighbours: no cluster-admin, no secrets, no nodes, no RBAC escalation,
  # no writes to what the operator only reads, no pods of its own.
  for q in "* *" "get secrets -n kube-system" "list secrets -A" "delete nodes" "create clusterrolebindings" \
    "delete namespaces" "delete customresourcedefinitions" "update leases.coordination.k8s.io/other -n $op_ns" \
    "get leases.coordination.k8s.io/other -n $op_ns" "create pods -n $ns" "delete pods -n $ns" "patch pods -n $ns" \
    "update jobs.batch -n $ns" "patch jobs.batch -n $ns" "update ingestjobs.ingest.vfxt.dev -n $ns" \
    "delete ingestjobs.ingest.vfxt.dev -n $ns" "create ingestjobs.ingest.vfxt.dev -n $ns" \
    "bind roles.rbac.authorization.k8s.io -n $ns" "escalate roles.rbac.authorization.k8s.io -n $ns" \
    "create roles.rbac.authorization.k8s.io -n $ns" "create rolebindings.rbac.authorization.k8s.io -n $ns" \
    "delete roles.rbac.authorization.k8s.io -n $ns" "delete persistentvolumeclaims -n $ns" \
    "update persistentvolumes" "create validatingadmissionpolicybindings.admissionregistration.k8s.io" \
    "delete validatingadmissionpolicybindings.admissionregistration.k8s.io"; do
    read -ra words <<<"$q"
    [[ $(can_i "${words[@]}") == no ]] || { bad "the chart's service account may: $q (least privilege)"; r=1; }
  done
  return "$r"
}

# The chart's admin policy for namespace $pns (test 2 installs it; test 16 checks each rule).
locked_rules='{"servers": ["10.0.0.5", "10.1.1.0/24"], "exportPaths": ["/export", "/nfs"], "allowRoot": false, "maxWorkers": 3, "maxThreadsPerWorker": 4}'

# ---------------------------------------------------------------- 3. a full run
# For each copy/verify pod, the NFS servers of the volumes it mounts at /ingest/dest-<i> (the contract's
# destination mounts), one line per pod: every worker mounts every server.
worker_servers() {
  kubectl get pods -n "$ns" -l "ingest.vfxt.dev/job=$1" -o json |
    jq -r '.items[] | select(.metadata.labels["ingest.vfxt.dev/role"] == "copy" or .metadata.labels["ingest.vfxt.dev/role"] == "verify")
           | .spec as $s | [$s.containers[].volumeMounts[]? | select(.mountPath | startswith("/ingest/dest-")) | .name] as $names
           | [$s.volumes[]? | select(.name as $n | $names | index($n)) | (.nfs.server // empty)] | sort | join(" ")' | sort -u
}
test_3_full_run() {
  gen_tree "$src/t3" 300
  watch_ij t3
  ij_apply t3 t3 /nfs || { bad "kubectl apply IngestJob t3"; return 1; }
  # Worker pods' volumes, collected while they exist (a finished Job's pods may be pruned).
  local servers="" deadline=$((SECONDS + 150)) phase
  while ((SECONDS < deadline)); do
    phase=$(ij_phase t3)
    servers=$(printf '%s\n%s\n' "$servers" "$(worker_servers t3)" | grep . | sort -u)
    [[ $phase == Succeeded || $phase == Failed ]] && break
    sleep 1
  done
  wait_for 15 "the watch of t3 recorded its end" watched_to_end t3 || return 1
  local r=0 seen
  seen=$(phases_seen t3)
  say "  phases seen: $seen"
  [[ $phase == Succeeded ]] || { bad "IngestJob t3 ended in phase '$phase' ($(ij_json t3 | jq -c '.status.conditions'))"; return 1; }
  [[ $seen == "Scanning Copying Verifying Succeeded" ]] || { bad "phases '$seen', want 'Scanning Copying Verifying Succeeded'"; r=1; }
  same_tree "$src/t3" "$dst/t3" || { bad "destination $dst/t3 differs from source $src/t3"; r=1; }
  local want got
  want=$(tree_totals "$src/t3")
  got=$(ij_json t3 | jq -r '.status.totals | "\(.files) \(.directories) \(.bytes)"')
  say "  tree: $want (files dirs bytes); status.totals: $got"
  [[ $got == "$want" ]] || { bad "status.totals '$got' != tree '$want' (files dirs bytes)"; r=1; }
  local prog
  prog=$(ij_json t3 | jq -r '"\(.status.progress.files) \(.status.progress.percent)"')
  [[ $prog == "${want%% *} 100" ]] || { bad "status.progress files/percent '$prog', want '${want%% *} 100'"; r=1; }
  say "  worker pods' NFS servers (per pod): $(echo "$servers" | tr '\n' '|')"
  [[ $servers == "${ips[*]}" ]] || { bad "each worker pod must mount every server: got '$(echo "$servers" | tr '\n' '|')', want '${ips[*]}'"; r=1; }
  local shards
  shards=$(ij_json t3 | jq -c '.status.shards')
  say "  shards: $shards"
  jq -e '.total > 0 and .succeeded == .total and .failed == 0' <<<"$shards" >/dev/null ||
    { bad "not every shard completed: $shards"; r=1; }
  progress_monotonic t3 || r=1
  no_forbidden || r=1
  job_identities t3 || r=1
  return "$r"
}

# job_identities NAME: the IngestJob's own service account holds no rights at all, asked of the API
# server: its scan pod sent its plan to the operator's endpoint (which stored it), and its copy and
# verify pods claim there; none may touch ConfigMaps, pods or anything else, and none mounts an API
# token. The operator made no Role or RoleBinding for the job.
job_identities() {
  local r=0 q words workers="system:serviceaccount:$ns:$1-workers"
  local run plan
  run=$(kubectl get ij "$1" -n "$ns" -o jsonpath='{.spec.run}')
  plan="$1-r${run:-0}-plan"
  for q in "create configmaps -n $ns" "patch configmaps -n $ns" "get configmaps -n $ns" "get configmaps/$plan-0 -n $ns" \
    "list configmaps -n $ns" "get pods -n $ns" "patch pods -n $ns" "create pods -n $ns" "get secrets -n $ns" \
    "create jobs.batch -n $ns" "list ingestjobs.ingest.vfxt.dev -n $ns" \
    "patch ingestjobs.ingest.vfxt.dev --subresource=status -n $ns"; do
    read -ra words <<<"$q"
    [[ $(kubectl auth can-i "${words[@]}" --as="$workers" 2>/dev/null) == no ]] || { bad "$1's pods may: $q"; r=1; }
  done
  local rbac
  rbac=$(kubectl get roles,rolebindings -n "$ns" -l "ingest.vfxt.dev/job=$1" -o name)
  [[ -z $rbac ]] || { bad "the operator made RBAC objects for $1: $rbac"; r=1; }
  local ids
  ids=$(kubectl get jobs -n "$ns" -l "ingest.vfxt.dev/job=$1" -o json |
    jq -r '.items[] | "\(.metadata.labels["ingest.vfxt.dev/role"]) \(.spec.template.spec.serviceAccountName) \(.spec.template.spec.automountServiceAccountToken)"' | sort -u)
  say "  $1's pods (role, service account, API token mounted): $(echo "$ids" | tr '\n' '|')"
  [[ $ids == "copy $1-workers false"$'\n'"scan $1-workers false"$'\n'"verify $1-workers false" ]] ||
    { bad "$1's pods run under another identity than the job's one, or mount an API token"; r=1; }
  return "$r"
}

# The operator's work so far went through the chart's RBAC: the API server never refused it.
no_forbidden() {
  if op_logs | grep -i forbidden >&2; then
    bad "the operator was refused an API call under the chart's RBAC (its log above)"
    return 1
  fi
}

# ---------------------------------------------------------------- 4. a worker killed mid-copy
running_copy_pod() {
  kubectl get pods -n "$ns" -l "ingest.vfxt.dev/job=$1,ingest.vfxt.dev/role=copy" -o json |
    jq -r '[.items[] | select(.status.phase == "Running" and (.status.containerStatuses[0].containerID // "" | startswith("agent://")))][0]
           | select(.) | "\(.metadata.name) \(.status.containerStatuses[0].containerID | ltrimstr("agent://")) \(.metadata.labels["job-name"]) \(.metadata.annotations["batch.kubernetes.io/job-completion-index"])"'
}
have_running_copy_pod() { [[ -n $(running_copy_pod "$1") ]]; }
copied_files() { find "$1" -type f 2>/dev/null | wc -l; }
test_4_worker_killed() {
  gen_tree "$src/t4" 300
  watch_ij t4
  ij_apply t4 t4 /slow || { bad "kubectl apply IngestJob t4"; return 1; }
  wait_for 120 "a copy pod of t4 running" have_running_copy_pod t4 || return 1
  local victim name pid job index
  victim=$(running_copy_pod t4)
  read -r name pid job index <<<"$victim"
  # Mid-copy: the copy has begun writing through the slow nodes, and this worker is still at it.
  wait_for 30 "t4 files arriving at the destination" sh -c "[ \$(find '$slow/backing/t4' -type f 2>/dev/null | wc -l) -gt 0 ]" || return 1
  local before
  before=$(copied_files "$slow/backing/t4")
  kill -0 "$pid" 2>/dev/null || { bad "worker $name (pid $pid) finished before it could be killed: raise E2E_SLOW_LATENCY_MS"; return 1; }
  kill -KILL "$pid"
  say "  killed worker $name (pid $pid, Job $job, index $index) with $before of $(find "$src/t4" -type f | wc -l) files copied"
  local r=0 code
  wait_for 60 "killed pod $name Failed" sh -c "kubectl get pod $name -n $ns -o jsonpath='{.status.phase}' | grep -qx Failed" || return 1
  code=$(kubectl get pod "$name" -n "$ns" -o jsonpath='{.status.containerStatuses[0].state.terminated.exitCode}')
  [[ $code == 137 ]] || { bad "killed worker exit code $code, want 137"; r=1; }
  wait_for 150 "IngestJob t4 finished" sh -c "kubectl get ij t4 -n $ns -o jsonpath='{.status.phase}' | grep -qxE 'Succeeded|Failed'" || return 1
  wait_for 15 "the watch of t4 recorded its end" watched_to_end t4 || return 1
  [[ $(ij_phase t4) == Succeeded ]] || { bad "t4 ended $(ij_phase t4): $(ij_json t4 | jq -c '.status.conditions')"; return 1; }
  # The worker was started again: another pod ran the same index of the same Job, and succeeded (the
  # killed one's claims went back to the queue).
  local retry
  retry=$(kubectl get pods -n "$ns" -l "job-name=$job" -o json | jq -r --arg n "$name" --arg i "$index" \
    '[.items[] | select(.metadata.name != $n and .metadata.annotations["batch.kubernetes.io/job-completion-index"] == $i)
      | .status.phase] | join(",")')
  say "  retries of $job index $index: ${retry:-none}"
  [[ $retry == *Succeeded* ]] || { bad "no succeeded retry of $job index $index (pods: ${retry:-none})"; r=1; }
  local v
  v=$(ij_json t4 | jq -c '{verification: .status.verification, failures: (.status.failures // [])}')
  say "  $v"
  jq -e '.verification.mismatched == 0 and .verification.missing == 0 and .verification.errors == 0
         and .verification.checked > 0 and (.failures | length) == 0' <<<"$v" >/dev/null ||
    { bad "verification not clean: $v"; r=1; }
  same_tree "$src/t4" "$slow/backing/t4" || { bad "destination differs from source after the retried shard"; r=1; }
  progress_monotonic t4 || r=1
  return "$r"
}

# ---------------------------------------------------------------- 5. the operator killed mid-job
# "name uid" of every Job of an IngestJob, sorted.
job_uids() { children jobs "$1" | jq -r '.items[] | "\(.metadata.name) \(.metadata.uid)"' | sort; }
copying_with_progress() {
  ij_json "$1" | jq -e '.status.phase == "Copying" and (.status.progress.files // 0) > 0' >/dev/null
}
op_container() { kubectl get pod "$op_pod" -n "$op_ns" -o json | jq -r ".status.containerStatuses[0].$1"; }
test_5_operator_killed() {
  [[ -n $op_pod ]] || { bad "no operator pod (test 2 failed)"; return 1; }
  gen_tree "$src/t5" 300
  watch_ij t5
  ij_apply t5 t5 /slow || { bad "kubectl apply IngestJob t5"; return 1; }
  wait_for 120 "t5 Copying with some progress" copying_with_progress t5 || return 1
  local before pid restarts0 prog
  before=$(job_uids t5)
  prog=$(ij_json t5 | jq -r '"\(.status.progress.files) files, \(.status.progress.bytes) bytes"')
  pid=$(op_container containerID)
  pid=${pid#agent://}
  restarts0=$(op_container restartCount)
  kill -KILL "$pid" || { bad "kill operator pid $pid"; return 1; }
  say "  killed the operator (pid $pid) in phase Copying at $prog; Jobs then: $(echo "$before" | awk '{print $1}' | tr '\n' ' ')"
  wait_for 60 "operator restarted (restartCount > $restarts0)" \
    sh -c "[ \$(kubectl get pod $op_pod -n $op_ns -o jsonpath='{.status.containerStatuses[0].restartCount}') -gt $restarts0 ]" || return 1
  wait_for 150 "IngestJob t5 finished" sh -c "kubectl get ij t5 -n $ns -o jsonpath='{.status.phase}' | grep -qxE 'Succeeded|Failed'" || return 1
  wait_for 15 "the watch of t5 recorded its end" watched_to_end t5 || return 1
  local r=0
  [[ $(ij_phase t5) == Succeeded ]] || { bad "t5 ended $(ij_phase t5): $(ij_json t5 | jq -c '.status.conditions')"; return 1; }
  local after names
  after=$(job_uids t5)
  # Every Job from before the kill is still the same object (not deleted and created again) ...
  local line
  while read -r line; do
    grep -qxF "$line" <<<"$after" || { bad "Job ${line%% *} was re-created or lost across the restart (uid ${line#* })"; r=1; }
  done <<<"$before"
  # ... and there is exactly one Job per pass: 1 scan, 1 copy, 1 verify (workers mount every server).
  names=$(children jobs t5 | jq -r '.items[] | .metadata.labels["ingest.vfxt.dev/role"]' | sort)
  say "  Jobs by role: $(echo "$names" | tr '\n' ' ')"
  [[ $(echo "$names" | tr '\n' ' ') == "copy scan verify " ]] ||
    { bad "Jobs of t5 are not one scan, one copy and one verify: $(echo "$names" | tr '\n' ' ')"; r=1; }
  # The copy pass's completions survived the restart: no shard was lost or counted twice.
  local shards
  shards=$(ij_json t5 | jq -c '.status.shards')
  jq -e '.succeeded == .total and .failed == 0' <<<"$shards" >/dev/null || { bad "shards after the restart: $shards"; r=1; }
  progress_monotonic t5 || r=1
  no_forbidden || r=1
  same_tree "$src/t5" "$slow/backing/t5" || { bad "destination differs from source"; r=1; }
  return "$r"
}

# ---------------------------------------------------------------- 7-9. issue 12: verdicts stay true
finished() { ij_phase "$1" | grep -qxE 'Succeeded|Failed'; }
# The run's record: what must never change once the run finished.
record() { ij_json "$1" | jq -c '.status | {phase, run, failedFiles, failures, completionTime, verification, reason: ([.conditions[]? | select(.type == "Ready") | .reason][0])}'; }
plans_of() { kubectl get configmaps -n "$ns" -l "ingest.vfxt.dev/job=$1,ingest.vfxt.dev/role=plan" -o name | sort; }
test_7_two_jobs_one_namespace() {
  gen_tree "$src/t7" 60
  local r=0 j
  ij_apply t7a t7 /nfs || { bad "kubectl apply t7a"; return 1; }
  ij_apply t7b t7 /nfs "  run: 2" || { bad "kubectl apply t7b"; return 1; }
  for j in t7a t7b; do wait_for 180 "$j finished" finished "$j" || return 1; done
  for j in t7a t7b; do
    [[ $(ij_phase $j) == Succeeded ]] || { bad "$j ended $(ij_phase $j): $(ij_json $j | jq -c '.status.message')"; r=1; }
  done
  local a b pa pb
  a=$(record t7a) b=$(record t7b) pa=$(plans_of t7a) pb=$(plans_of t7b)
  [[ -n $pa && -n $pb ]] || { bad "plans missing after the run: t7a [$pa] t7b [$pb]"; r=1; }
  # One after the other: a third job at run 2 while both are finished.
  ij_apply t7c t7 /nfs "  run: 2" || { bad "kubectl apply t7c"; return 1; }
  wait_for 180 "t7c finished" finished t7c || return 1
  [[ $(ij_phase t7c) == Succeeded ]] || { bad "t7c ended $(ij_phase t7c): $(ij_json t7c | jq -c '.status.message')"; r=1; }
  [[ $(record t7a) == "$a" ]] || { bad "t7a's verdict changed: $a -> $(record t7a)"; r=1; }
  [[ $(record t7b) == "$b" ]] || { bad "t7b's verdict changed: $b -> $(record t7b)"; r=1; }
  [[ $(plans_of t7a) == "$pa" && $(plans_of t7b) == "$pb" ]] || { bad "plan ConfigMaps of t7a/t7b changed: $(plans_of t7a) $(plans_of t7b)"; r=1; }
  for j in t7a t7b t7c; do same_tree "$src/t7" "$dst/$j" || { bad "$j: destination differs from source"; r=1; }; done
  return "$r"
}
no_pods_of() { [[ $(children pods "$1" | jq '.items | length') == 0 ]]; }
test_8_verdict_survives_pod_deletion() {
  finished t7a || { bad "t7a not finished (test 7 failed)"; return 1; }
  local before gen0 r=0
  before=$(record t7a)
  gen0=$(ij_json t7a | jq -r '.status.observedGeneration')
  kubectl delete pods -n "$ns" -l ingest.vfxt.dev/job=t7a --wait=true >/dev/null || { bad "kubectl delete pods"; return 1; }
  wait_for 60 "t7a's pods gone" no_pods_of t7a || return 1
  kubectl patch ij t7a -n "$ns" --type merge -p '{"spec":{"failurePolicy":{"action":"FailJob","maxFailedFiles":0}}}' >/dev/null ||
    { bad "kubectl patch t7a failurePolicy"; return 1; }
  # The pod deletions and the edit are events the operator reconciles t7a on; a whole other run (t8)
  # finishing afterwards is the event this test waits for, not a fixed time.
  ij_apply t8 t7 /nfs || { bad "kubectl apply t8"; return 1; }
  wait_for 180 "t8 finished" finished t8 || return 1
  [[ $(record t7a) == "$before" ]] || { bad "t7a's verdict changed after its pods were deleted: $before -> $(record t7a)"; r=1; }
  local gen
  gen=$(ij_json t7a | jq -r '.status.observedGeneration')
  [[ $gen == "$gen0" ]] || { bad "observedGeneration moved to $gen for an edit the finished run never applies"; r=1; }
  return "$r"
}
test_9_fail_job_stops() {
  mkdir -p "$src/t9/d"
  gen_tree "$src/t9/d" 30
  # Sockets are copied now (mknod); a non-empty destination directory in a file's place is a
  # failure the engine reports and never resolves by deleting.
  echo data >"$src/t9/d/blocker"
  mkdir -p "$dst/t9/d/blocker/kept" && echo theirs >"$dst/t9/d/blocker/kept/file" ||
    { bad "could not prepare the destination"; return 1; }
  # Every pod's full report goes beside the copied tree, on the destination export.
  ij_failure_policy='{action: FailJob, retriesPerShard: 3}' ij_apply t9 t9 /nfs "  report: {destinationPath: reports}" ||
    { bad "kubectl apply t9"; return 1; }
  wait_for 180 "t9 finished" finished t9 || return 1
  local r=0 st
  st=$(ij_json t9 | jq -c '.status | {phase, message, failures, reason: ([.conditions[]? | select(.type == "Stalled") | .reason][0])}')
  say "  $st"
  jq -e '.phase == "Failed" and .reason == "ShardFailed" and (.message | test("no verify pass"))' <<<"$st" >/dev/null ||
    { bad "t9 is not Failed/ShardFailed with the run stopped: $st"; r=1; }
  jq -e 'any(.failures[]?; .path | test("d/blocker"))' <<<"$st" >/dev/null || { bad "d/blocker is not listed: $st"; r=1; }
  [[ -f $dst/t9/d/blocker/kept/file ]] || { bad "the destination's own data was deleted"; r=1; }
  # The full failure list, read back from where the status says the reports are, once the workers
  # (told to stop) have ended: each writes its report when it exits.
  wait_for 60 "t9's worker pods ended" sh -c "! kubectl get pods -n $ns -l ingest.vfxt.dev/job=t9 -o jsonpath='{.items[*].status.phase}' | grep -qw Running" || return 1
  local where
  where=$(ij_json t9 | jq -r '.status.report.location // ""')
  [[ $where == *reports/t9/run-0* ]] || { bad "status.report.location is '$where'"; r=1; }
  "$bin" report --jsonl "$dst/reports/t9" | jq -e -s 'any(.[]; .path == "d/blocker" and .outcome == "failed")' >/dev/null ||
    { bad "vfxt-ingest report $dst/reports/t9 does not list d/blocker: $("$bin" report "$dst/reports/t9" 2>&1 | tail -5)"; r=1; }
  local roles
  roles=$(children jobs t9 | jq -r '[.items[].metadata.labels["ingest.vfxt.dev/role"]] | unique | join(" ")')
  [[ $roles != *verify* ]] || { bad "a verify Job was created after FailJob: roles $roles"; r=1; }
  return "$r"
}

test_10_progress_with_many_short_pods() {
  # 200 one-file directories planned as about as many shards: a copy phase of many short claims.
  # The status must show progress moving during the phase (a debounce pushed back by every pod
  # event once froze it at 0 for the whole phase; now workers report to the claims endpoint and
  # the reconcile looks every status interval).
  local i
  for ((i = 1; i <= 200; i++)); do
    mkdir -p "$src/t10/d$i" && echo "$i" >"$src/t10/d$i/f"
  done
  watch_ij t10
  # Through the slow nodes, so the copy phase lasts long enough to be sampled several times.
  ij_shards=200 ij_apply t10 t10 /slow || { bad "kubectl apply t10"; return 1; }
  wait_for 600 "t10 finished" finished t10 || return 1
  local r=0 shards moves
  shards=$(ij_json t10 | jq -r '.status.shards.total')
  say "  shards: $shards; statuses seen: $(wc -l <"$data/watch-t10")"
  ((shards >= 100)) || { bad "only $shards shards: not a phase of many short pods"; r=1; }
  [[ $(ij_json t10 | jq -r '.status.phase') == Succeeded ]] || { bad "t10 did not succeed: $(ij_json t10 | jq -c .status.message)"; r=1; }
  # Distinct file counts the status showed while Copying: progress moved, not one jump at the end.
  moves=$(awk '$1 == "Copying" && $2 != "" { print $2 }' "$data/watch-t10" | sort -un | wc -l)
  ((moves >= 3)) || { bad "progress showed only $moves distinct file counts during the copy phase: $(tr '\n' ';' <"$data/watch-t10")"; r=1; }
  progress_monotonic t10 || r=1
  return "$r"
}

test_11_unreadable_directory() {
  # Workers run as uid 1000 (root reads a mode-000 directory anyway): the scan, every copy and
  # every verify pod meet locked/ and cannot read it. One failed entry, listed once, weighed by
  # the failure policy: within maxFailedFiles the run succeeds with it listed, at 0 it fails.
  mkdir -p "$src/t11/ok/deep" "$src/t11/locked/inner"
  echo a >"$src/t11/ok/deep/a" && echo b >"$src/t11/locked/inner/b" && echo top >"$src/t11/top"
  chmod 000 "$src/t11/locked"
  local j r=0 st
  for j in t11a t11b; do
    mkdir -p "$dst/$j" && chown 1000:1000 "$dst/$j" || { bad "could not prepare $dst/$j"; return 1; }
  done
  local as_user='  preserve: {owner: false}
  worker: {securityContext: {runAsUser: 1000, runAsGroup: 1000}}'
  ij_failure_policy='{maxFailedFiles: 5}' ij_apply t11a t11 /nfs "$as_user" || { bad "kubectl apply t11a"; return 1; }
  ij_failure_policy='{maxFailedFiles: 0}' ij_apply t11b t11 /nfs "$as_user" || { bad "kubectl apply t11b"; return 1; }
  for j in t11a t11b; do wait_for 180 "$j finished" finished "$j" || { chmod 755 "$src/t11/locked"; return 1; }; done
  chmod 755 "$src/t11/locked"
  for j in t11a t11b; do
    st=$(ij_json $j | jq -c '.status | {phase, failedFiles, message, failures: [.failures[]?.path], reason: ([.conditions[]? | select(.type == "Ready") | .reason][0])}')
    say "  $j: $st"
    jq -e '.failedFiles == 1 and .failures == ["locked"]' <<<"$st" >/dev/null ||
      { bad "$j: locked/ is not one failed entry listed once: $st"; r=1; }
    [[ $(cat "$dst/$j/ok/deep/a" 2>/dev/null) == a && $(cat "$dst/$j/top" 2>/dev/null) == top ]] ||
      { bad "$j: the readable entries were not all copied"; r=1; }
  done
  jq -e '.phase == "Succeeded" and .reason == "SucceededWithFailures"' <<<"$(ij_json t11a | jq -c '.status | {phase, reason: ([.conditions[]? | select(.type == "Ready") | .reason][0])}')" >/dev/null ||
    { bad "t11a (maxFailedFiles 5) did not succeed with failures"; r=1; }
  [[ $(ij_phase t11b) == Failed && $(ij_json t11b | jq -r '.status.message') == *maxFailedFiles* ]] ||
    { bad "t11b (maxFailedFiles 0) is not Failed for too many failures: $(ij_json t11b | jq -c '.status.message')"; r=1; }
  return "$r"
}

test_12_one_node_at_a_quarter_capacity() {
  # Three IPs of one export, the third node with a quarter of the others' capacity. Every worker
  # mounts all three and takes shards from one queue, so the slow node costs only its share.
  gen_tree "$src/t12" 300
  ij_threads=auto ij_apply t12 t12 /uneven || { bad "kubectl apply t12"; return 1; }
  wait_for 300 "t12 finished" finished t12 || return 1
  local r=0 st
  st=$(ij_json t12 | jq -c '.status | {phase, shards, servers: [.servers[]?.server], checked: .verification.checked}')
  say "  $st"
  jq -e '.phase == "Succeeded" and .shards.succeeded == .shards.total and .shards.failed == 0
         and (.servers | length) == 3' <<<"$st" >/dev/null || { bad "t12: $st"; r=1; }
  same_tree "$src/t12" "$uneven/backing/t12" || { bad "destination differs from source"; r=1; }
  return "$r"
}

test_13_one_node_stops_answering() {
  # The third node of /hung stops answering at its E2E_HUNG_AT-th operation. Every worker of the
  # copy Job writes through it and gets stuck there: each reports it (stallTimeoutSeconds),
  # hands its shards back and exits 4; the operator makes the pass a new Job without that server.
  gen_tree "$src/t13" 300
  # Two threads per IP (threads are dealt round robin over the mounts).
  ij_threads=6 ij_apply t13 t13 /hung "  stallTimeoutSeconds: 10" || { bad "kubectl apply t13"; return 1; }
  wait_for 600 "t13 finished" finished t13 || return 1
  local r=0 st
  st=$(ij_json t13 | jq -c '.status | {phase, shards, servers: [.servers[]? | {server, state, files, message}],
        responding: ([.conditions[]? | select(.type == "ServersResponding")][0] | {status, reason, message})}')
  say "  $st"
  jq -e --arg hung "${ips[2]}" '.phase == "Succeeded" and .shards.succeeded == .shards.total and .shards.failed == 0
         and ([.servers[] | select(.state == "Unresponsive") | .server] == [$hung])
         and ([.servers[] | select(.server == $hung) | .message][0] | length > 0)
         and .responding.status == "False" and .responding.reason == "ServerUnresponsive"
         and (.responding.message | contains($hung))' <<<"$st" >/dev/null || { bad "t13: $st"; r=1; }
  [[ $(unresponsive_held) -ge 1 ]] || { bad "the third node held no request: nothing was tested"; r=1; }
  kubectl get events -n "$ns" --field-selector "involvedObject.name=t13,reason=ServerUnresponsive" -o name |
    grep -q . || { bad "no ServerUnresponsive Event for t13"; r=1; }
  # The pass went on in a Job whose pods do not mount the hung server.
  local next
  next=$(kubectl get job t13-r0-copy-x1 -n "$ns" -o json 2>/dev/null) || { bad "no Job t13-r0-copy-x1"; r=1; }
  if [[ -n $next ]]; then
    jq -e '[.spec.template.spec.volumes[].name | select(startswith("dest-"))] == ["dest-0", "dest-1"]' <<<"$next" >/dev/null ||
      { bad "t13-r0-copy-x1 mounts: $(jq -c '[.spec.template.spec.volumes[].name]' <<<"$next")"; r=1; }
  fi
  same_tree "$src/t13" "$hung/backing/t13" || { bad "destination differs from source"; r=1; }
  return "$r"
}
# 1 once the hung node held a request (e2e-slow-nodes says so in its log), else 0.
unresponsive_held() { grep -c '^stopped answering' "$data/slow-nodes-hung-3.log" || true; }

# ---------------------------------------------------------------- 6. deletion
# kind/name of every object owned by the IngestJob or labelled with it, and of the Jobs' pods.
owned_objects() {
  local uid=$1 job=$2
  kubectl get jobs,pods,configmaps,serviceaccounts,roles,rolebindings,persistentvolumeclaims -n "$ns" -o json |
    jq -r --arg uid "$uid" --arg job "$job" '.items[]
      | select(any(.metadata.ownerReferences[]?; .uid == $uid) or .metadata.labels["ingest.vfxt.dev/job"] == $job)
      | "\(.kind)/\(.metadata.name)"' | sort
}
test_6_delete() {
  local uid objects snap
  uid=$(kubectl get ij t3 -n "$ns" -o jsonpath='{.metadata.uid}') || { bad "no IngestJob t3 (test 3 failed)"; return 1; }
  objects=$(owned_objects "$uid" t3)
  say "  children of t3: $(echo "$objects" | awk -F/ '{print $1}' | sort | uniq -c | awk '{printf "%s %s, ", $1, $2}')"
  local r=0 kind
  for kind in Job Pod ConfigMap; do
    grep -q "^$kind/" <<<"$objects" || { bad "t3 has no ${kind}s to delete: nothing would be tested"; r=1; }
  done
  snap=$(tree_listing "$dst/t3")
  kubectl delete ij t3 -n "$ns" --wait=true --timeout=60s >/dev/null || { bad "kubectl delete ij t3"; return 1; }
  wait_for 120 "the garbage collector removed t3's children" t6_gone "$uid" || r=1
  local left
  left=$(owned_objects "$uid" t3)
  [[ -z $left ]] || { bad "left after deleting t3: $(echo "$left" | tr '\n' ' ')"; r=1; }
  [[ $(tree_listing "$dst/t3") == "$snap" ]] || { bad "the destination tree changed when t3 was deleted"; r=1; }
  same_tree "$src/t3" "$dst/t3" || { bad "the copied data no longer matches the source"; r=1; }
  return "$r"
}
t6_gone() { [[ -z $(owned_objects "$1" t3) ]]; }

# Runs on exit, however the script ends; keeps the run dir and test data of a failed run.
# ---------------------------------------------------------------- 14. a dry run, then the pass
# Every entry of a destination tree with its ctime and mtime: a write of any kind moves one.
dest_stamps() { (cd "$1" && find . -printf '%P|%C@|%T@\n' | LC_ALL=C sort); }
finished_run() { [[ $(ij_json "$1" | jq -r '.status.run') == "$2" ]] && finished "$1"; }
ready_reason() { ij_json "$1" | jq -r '.status.conditions[]? | select(.type == "Ready") | .reason'; }
test_14_dry_run_then_copy() {
  gen_tree "$src/t14" 120
  # A dry run creates nothing, not even the destination's directory: it must exist.
  mkdir -p "$dst/t14" && echo theirs >"$dst/t14/theirs.txt"
  local before r=0 msg want
  before=$(dest_stamps "$dst/t14")
  ij_apply t14 t14 /nfs "  dryRun: true" || { bad "kubectl apply IngestJob t14 (dryRun)"; return 1; }
  wait_for 150 "t14's dry run finished" finished_run t14 0 || return 1
  msg=$(ij_json t14 | jq -r '.status.message')
  say "  dry run: $(ij_phase t14)/$(ready_reason t14): $msg"
  [[ $(ij_phase t14) == Succeeded && $(ready_reason t14) == DryRun ]] || { bad "dry run ended $(ij_phase t14)/$(ready_reason t14)"; r=1; }
  [[ $msg == "dry run, nothing written: a pass would create"*"1 entry only in the destination"* ]] || { bad "dry run message: $msg"; r=1; }
  want=$(($(find "$src/t14" -mindepth 1 | wc -l)))
  (($(ij_json t14 | jq -r ".status.verification.missing") >= want)) ||
    { bad "verification.missing $(ij_json t14 | jq -r '.status.verification.missing'), want at least every entry ($want; a path of a hard link is checked where each scope meets it)"; r=1; }
  [[ $(dest_stamps "$dst/t14") == "$before" ]] || { bad "the dry run wrote to the destination"; r=1; }
  [[ -z $(children jobs t14 | jq -r '.items[] | select(.metadata.labels["ingest.vfxt.dev/role"] == "copy") | .metadata.name') ]] ||
    { bad "a dry run made a copy Job"; r=1; }
  # The real pass.
  rm "$dst/t14/theirs.txt"
  ij_apply t14 t14 /nfs "  run: 1" || { bad "kubectl apply IngestJob t14 (run 1)"; return 1; }
  wait_for 150 "t14's run 1 finished" finished_run t14 1 || return 1
  [[ $(ij_phase t14) == Succeeded ]] || { bad "run 1 ended $(ij_phase t14): $(ij_json t14 | jq -c '.status.conditions')"; r=1; }
  same_tree "$src/t14" "$dst/t14" || { bad "after the real pass, $dst/t14 differs from $src/t14"; r=1; }
  return "$r"
}

# ---------------------------------------------------------------- 15. three passes to a cutover
test_15_three_passes() {
  gen_tree "$src/t15" 120
  local r=0 run want got
  ij_apply t15 t15 /nfs "" || { bad "kubectl apply IngestJob t15 (bulk)"; return 1; }
  wait_for 150 "t15's bulk pass finished" finished_run t15 0 || return 1
  # Users keep working: a new file, a changed one. The delta pass copies them.
  echo new >"$src/t15/d/new.txt"
  printf 'changed\n' >>"$src/t15/a/f4"
  ij_apply t15 t15 /nfs "  run: 1" || { bad "kubectl apply IngestJob t15 (delta)"; return 1; }
  wait_for 150 "t15's delta pass finished" finished_run t15 1 || return 1
  for run in 0 1; do
    [[ $(ij_json t15 | jq -r ".status.passes[] | select(.run == $run) | .phase") == Succeeded ]] ||
      { bad "pass $run: $(ij_json t15 | jq -c ".status.passes[] | select(.run == $run)")"; r=1; }
  done
  same_tree "$src/t15" "$dst/t15" || { bad "after the delta pass, $dst/t15 differs"; r=1; }
  # The delta's record says it wrote the two files users changed; the rest it found up to date.
  got=$(ij_json t15 | jq -r '.status.passes[] | select(.run == 1) | "\(.files - (.upToDate // 0)) of \(.files)"')
  [[ $got == "2 of "* ]] || { bad "the delta pass wrote $got files, want 2 (new.txt, a/f4)"; r=1; }
  say "  delta pass: $got files written, the rest up to date"
  # Cutover: users deleted a directory and a file (one of a hard link's two paths); the final pass
  # mirrors, reading the data of what it wrote (verify.scope Changed; with the 5-minute margin, in
  # a test that is every file).
  want=$(($(find "$dst/t15/d/e" | wc -l) + 1))
  rm -r "$src/t15/d/e" "$src/t15/a/f8"
  ij_verify="Checksum, scope: Changed" ij_apply t15 t15 /nfs "  run: 2
  mode: Mirror
  maxDeletes: \"50%\"" || { bad "kubectl apply IngestJob t15 (final Mirror)"; return 1; }
  wait_for 150 "t15's final pass finished" finished_run t15 2 || return 1
  say "  final pass: $(ij_phase t15)/$(ready_reason t15): $(ij_json t15 | jq -r '.status.message')"
  [[ $(ij_phase t15) == Succeeded ]] || { bad "the final pass ended $(ij_phase t15): $(ij_json t15 | jq -c '.status.conditions')"; r=1; }
  same_tree "$src/t15" "$dst/t15" || { bad "after the final pass, $dst/t15 differs"; r=1; }
  got=$(ij_json t15 | jq -c '.status.mirror')
  [[ $(jq -r .deleted <<<"$got") == "$want" && $(jq -r .found <<<"$got") == "$want" && $(jq -r '.refused // ""' <<<"$got") == "" ]] ||
    { bad "status.mirror $got, want $want found and deleted"; r=1; }
  got=$(ij_json t15 | jq -r '[.status.passes[] | "\(.run):\(.mode):\(.deleted // 0)"] | join(" ")')
  [[ $got == "0:Copy:0 1:Copy:0 2:Mirror:$want" ]] || { bad "status.passes: $got"; r=1; }
  [[ -n $(children jobs t15 | jq -r '.items[] | select(.metadata.labels["ingest.vfxt.dev/role"] == "prune") | .metadata.name') ]] ||
    { bad "the final pass made no prune Job"; r=1; }
  children jobs t15 | jq -e '[.items[] | select(.metadata.labels["ingest.vfxt.dev/role"] == "verify" and .metadata.labels["ingest.vfxt.dev/run"] == "2")
      | .spec.template.spec.containers[0].args[] | select(startswith("--content-changed-since="))] | length > 0' >/dev/null ||
    { bad "the final pass's verify Job was not given the copy's start (verify.scope Changed)"; r=1; }
  return "$r"
}

cleanup() {
  local rc=$?
  # Watchers first, then the plane (component log tails and pod logs on failure; down.sh), then the
  # slow nodes, which must outlive the pods that write through them.
  jobs -p | grep -vxF -f <(printf '%s\n' "${slow_pids[@]}") | xargs -r kill 2>/dev/null || true
  if [[ -n $e2e_run_dir ]]; then
    if ((rc)); then
      say "run dir (kept): $e2e_run_dir; test data: $data"
      for f in "$e2e_run_dir"/logs/*.log; do
        echo "----- last 30 lines of $f" >&2
        tail -n 30 "$f" >&2
      done
      on_failure >&2 2>&1 || true
    fi
    "$here/../controlplane/down.sh" "$e2e_run_dir" >&2 || true
  fi
  local pid
  # They exit 130 on SIGTERM, after unmounting: that status is not the test's.
  for pid in "${slow_pids[@]}"; do { kill "$pid" && wait "$pid"; } 2>/dev/null || true; done
  # The benchmark's tmpfs goes whatever the outcome (what a failure leaves is in the logs above).
  if [[ -n ${data_on_tmpfs-} ]] && mountpoint -q "$data"; then umount "$data" || umount -l "$data"; fi
  ((rc)) || rm -rf "$data"
  exit "$rc"
}

# ---------------------------------------------------------------- setup
slow_pids=()
# start_slow_nodes NAME ARGS...: e2e-slow-nodes ARGS in the background, waits for its "ready".
start_slow_nodes() {
  local name=$1
  shift
  "$slow_nodes" "$@" >"$data/slow-nodes-$name.log" 2>&1 &
  slow_pids+=($!)
  for _ in $(seq 50); do grep -qx ready "$data/slow-nodes-$name.log" && break; sleep 0.1; done
  grep -qx ready "$data/slow-nodes-$name.log" || fail "e2e-slow-nodes ($name) did not start: $(cat "$data/slow-nodes-$name.log")"
}
setup() {
  say "building vfxt-ingest and e2e-tests"
  (cd "$repo" && nice -n 10 cargo build -q -p vfxt-ingest -p e2e-tests) || fail "cargo build -p vfxt-ingest -p e2e-tests"
  target=${CARGO_TARGET_DIR:-$repo/target}
  # The benchmark runs the release build (E2E_VFXT_BIN); the tests the debug one.
  bin=${E2E_VFXT_BIN:-$target/debug/vfxt-ingest}
  # Pods run it by an absolute path (the node agent's image override), whatever the caller's cwd.
  bin=$(realpath -- "$bin") || fail "E2E_VFXT_BIN: $E2E_VFXT_BIN not found"
  # The agent runs it in place of a pod's `vfxt-ingest` command only under that file name.
  [[ $(basename -- "$bin") == vfxt-ingest ]] ||
    fail "E2E_VFXT_BIN: $bin: the binary must be named vfxt-ingest (pods run the command vfxt-ingest, which the node agent maps to a binary of that name); copy it into a directory of its own"
  slow_nodes=$target/debug/e2e-slow-nodes

  data=$(mktemp -d "${TMPDIR:-/tmp}/vfxt-e2e-operator.XXXXXX")
  # The benchmark keeps its trees in memory: on a disk, ext4 makes each new file scan for inodes
  # deleted lately (`recently_deleted` in ext4_create: 60-80% of a run's CPU in perf for minutes
  # after a large delete), so the same `run` took 1.6 s or 10 s by what was deleted before it.
  if [[ -n ${data_on_tmpfs-} ]]; then
    mount -t tmpfs -o size=4g,mode=0700 vfxt-e2e-bench "$data" || fail "mount a tmpfs on $data"
  fi
  src=$data/src      # the source filer's export 10.0.0.5:/export
  dst=$data/dst      # one cluster export, reached as 10.1.1.101..103:/nfs
  slow=$data/slow    # another: 10.1.1.101..103:/slow, each IP through its own slow emulated node
  fast=$data/fast    # a source filer without added latency, 10.0.0.6:/fast (the benchmark's)
  mkdir -p "$src" "$dst" "$slow/backing" "$fast"
  # The source filer is a slow node too, as a real one over NFS is: a scan takes a few seconds rather
  # than the milliseconds of a local disk, longer than the operator's reconcile debounce.
  start_slow_nodes source --backing "$src" --latency-ms "${E2E_SOURCE_LATENCY_MS:-25}" --capacity 2 "$data/source-node"
  start_slow_nodes cluster --backing "$slow/backing" --latency-ms "${E2E_SLOW_LATENCY_MS:-15}" --capacity 4 \
    "$slow/node1" "$slow/node2" "$slow/node3"
  # One export whose third node has a quarter of the others' capacity (test 12).
  uneven=$data/uneven
  mkdir -p "$uneven/backing"
  start_slow_nodes uneven --backing "$uneven/backing" --latency-ms "${E2E_SLOW_LATENCY_MS:-15}" --capacity 4 \
    "$uneven/node1" "$uneven/node2"
  start_slow_nodes uneven-small --backing "$uneven/backing" --latency-ms "${E2E_SLOW_LATENCY_MS:-15}" --capacity 1 \
    "$uneven/node3"
  # One export whose third node stops answering at its E2E_HUNG_AT-th operation (test 13): past the
  # workers' start (a probe, a few lookups), well before the end of a 300-file copy.
  hung=$data/hung
  mkdir -p "$hung/backing"
  start_slow_nodes hung --backing "$hung/backing" --latency-ms "${E2E_SLOW_LATENCY_MS:-15}" --capacity 4 \
    "$hung/node1" "$hung/node2"
  start_slow_nodes hung-3 --backing "$hung/backing" --latency-ms "${E2E_SLOW_LATENCY_MS:-15}" --capacity 4 \
    --stop-answering-at "${E2E_HUNG_AT:-150}" "$hung/node3"

  image=registry.invalid/vfxt-ingest
  ips=(10.1.1.101 10.1.1.102 10.1.1.103)
  maps=(--nfs-map "10.0.0.5:/export=$data/source-node" --nfs-map "10.0.0.6:/fast=$fast")
  for i in 0 1 2; do
    maps+=(--nfs-map "${ips[i]}:/nfs=$dst" --nfs-map "${ips[i]}:/slow=$slow/node$((i + 1))"
      --nfs-map "${ips[i]}:/uneven=$uneven/node$((i + 1))" --nfs-map "${ips[i]}:/hung=$hung/node$((i + 1))")
  done

  trap cleanup EXIT

  say "bringing up the control plane with the node agent"
  up_out=$("$here/../controlplane/up.sh" --agent "${maps[@]}" --exec-override "$image=$bin") || fail "up.sh failed"
  eval "$up_out"
  e2e_run_dir=$VFXT_E2E_RUN_DIR

  ns=ingest-e2e
  op_ns=vfxt-ingest-system
  # A namespace the chart's admin policy locks down (test 16).
  pns=ingest-e2e-locked
  kubectl create namespace "$pns" >/dev/null
  kubectl create namespace "$ns" >/dev/null
  # Every IngestJob of these tests runs its pods under Pod Security's baseline level, enforced by
  # the API server (the default worker pods must pass it; test 2 checks the enforcement is on).
  kubectl label namespace "$ns" pod-security.kubernetes.io/enforce=baseline \
    pod-security.kubernetes.io/enforce-version=latest >/dev/null
  wait_until 60 "default service account in $ns" kubectl get serviceaccount default -n "$ns"
}

# ---------------------------------------------------------------- benchmark (not a test)
# operator.sh --bench [FILES]: the same IngestJob (FILES small files, default 20000, in 100-file
# directories; 3 workers, threads auto, verify Metadata) through the operator on this plane and
# through `vfxt-ingest run` on this machine, both from an unthrottled source to the same export.
# Prints a table and writes JSON to $E2E_BENCH_JSON (default $data/bench.json, kept). Both copies must
# be identical to the source, or the figures do not count. Pod start-up is measured on the rig: per pod
# wave (scan, copy, verify), from the Job's creation to its first container start (wave_startup).
# The trees are on a tmpfs (see setup): what is measured is the two paths, not the disk's state.
bench_yaml() { # NAME DEST_SUBPATH [MOUNTS_YAML]: from the unthrottled source, the planner's shards
  ij_source='{server: 10.0.0.6, path: /fast}' ij_dest_subpath=$2 ij_threads=auto ij_shards=auto \
    ij_yaml "$1" bench /nfs "${3-}"
}
now_s() { date +%s.%N; }
# wave_startup JOB: seconds from the Job's creation (its ADDED event in $data/bench-jobs, seen by a
# watch) to its first container's start (the birth of the container's log file, which the node
# agent creates as it starts the process); both to the millisecond, where the API's timestamps
# have whole seconds.
wave_startup() {
  local job=$1 created started f b
  created=$(awk -v j="$job" '$2 == "ADDED" && $3 == j { print $1; exit }' "$data/bench-jobs")
  [[ -n $created ]] || fail "no ADDED event of Job $job in $data/bench-jobs"
  for f in "$e2e_run_dir"/agent/pods/"$ns"_"$job"-*/containers/*/log; do
    [[ -f $f ]] || continue
    b=$(date -d "$(stat -c %w "$f")" +%s.%N)
    [[ -z ${started-} ]] || awk "BEGIN {exit !($b < $started)}" && started=$b
  done
  [[ -n ${started-} ]] || fail "no container log of Job $job's pods"
  awk "BEGIN {printf \"%.3f\", $started - $created}"
}
# ticks PATTERN OWN|KIDS: clock ticks (user + system) used so far by the processes whose command line
# matches PATTERN: their own (fields 14-15 of /proc/PID/stat), or their reaped children's (16-17).
ticks() {
  local p t sum=0
  for p in $(pgrep -f -- "$1"); do
    t=$(awk -v kids="$2" '{print kids == "KIDS" ? $16 + $17 : $14 + $15}' "/proc/$p/stat" 2>/dev/null) || continue
    sum=$((sum + t))
  done
  echo "$sum"
}
# cpu_ticks: "apiserver etcd controller-manager agent pods operator", each from ticks: pods are the
# scan and worker processes, counted in the node agent's children's time once it has reaped them.
cpu_ticks() {
  echo "$(ticks bin/kube-apiserver OWN) $(ticks bin/etcd OWN) $(ticks bin/kube-controller-manager OWN)" \
    "$(ticks test-node-agent OWN) $(ticks test-node-agent KIDS) $(ticks 'vfxt-ingest operator' OWN)"
}
bench() {
  local n=${1:-20000} d i
  say "benchmark: $n files, operator vs vfxt-ingest run ($bin)"
  for ((d = 0; d < (n + 99) / 100; d++)); do
    mkdir -p "$fast/bench/d$d"
    for ((i = 0; i < 100 && d * 100 + i < n; i++)); do printf '%s\n' "$d/$i" >"$fast/bench/d$d/f$i"; done
  done
  local t0 t1 phase=""
  # Each timed part starts with nothing dirty in the page cache: the tree just written (or the other
  # path's copy) would otherwise be written back during it, and the two paths would pay for different
  # amounts of it (`run` took 4.7 to 11.5 s on the same quiet machine without this).
  # Two watches, each line stamped as it arrives: when each Job appears (for the pod start-up
  # below), and the IngestJob's phase (idle between events: a kubectl polled every 0.2 s cost the
  # operator's side CPU that `run` below does not pay). Both are established before the clock
  # starts: kubectl's own start-up (a Go binary and its discovery, 0.1-0.2 s of CPU each) on the
  # 2 cores the operator and the API server share is the instrument's cost, not the operator's.
  # kubectl -v=6 logs each response; a watch's comes when the API server has started it.
  kubectl -v=6 get jobs -n "$ns" -w --output-watch-events -o jsonpath='{.type} {.object.metadata.name}{"\n"}' \
    2>"$data/bench-jobs.trace" |
    while read -r type name; do printf '%s %s %s\n' "$EPOCHREALTIME" "$type" "$name"; done >"$data/bench-jobs" &
  local jobs_watch=$! phases
  exec {phases}< <(kubectl -v=6 get ij -n "$ns" --field-selector metadata.name=bench -w --output-watch-events=false \
    -o jsonpath='{.status.phase}{"\n"}' 2>"$data/bench-ij.trace" |
    while read -r phase; do printf '%s %s\n' "$EPOCHREALTIME" "$phase"; done)
  local trace
  for trace in "$data/bench-jobs.trace" "$data/bench-ij.trace"; do
    wait_for 60 "the watch of $trace started" grep -q 'watch=true.*200' "$trace" ||
      fail "a bench watch did not start: $(tail -n 3 "$trace")"
  done
  sync
  local cpu0 cpu1
  cpu0=$(cpu_ticks)
  t0=$(now_s)
  bench_yaml bench bench-op | kubectl apply -f - >/dev/null || fail "kubectl apply bench"
  # kubectl's own time (start-up, discovery, the request): the object exists by its return.
  local apply_s
  apply_s=$(awk "BEGIN {printf \"%.3f\", $(now_s) - $t0}")
  local seen="" timeline="" at
  while read -r -u "$phases" at phase; do
    [[ -z ${phase-} || $phase == "$seen" ]] && continue
    [[ $phase == Succeeded || $phase == Failed ]] && break
    timeline+="$phase@$(awk "BEGIN {printf \"%.1f\", $at - $t0}")s "
    seen=$phase
  done
  exec {phases}<&-
  [[ $phase == Succeeded ]] || fail "the operator's run ended ${phase:-nowhere (the watch ended)}: $(ij_json bench | jq -c .status.message)"
  t1=$at
  cpu1=$(cpu_ticks)
  local op_s startup=0 w waves=""
  op_s=$(awk "BEGIN {print $t1 - $t0}")
  kill "$jobs_watch" 2>/dev/null || true
  for w in scan copy verify; do
    w=$(wave_startup "bench-r0-$w")
    waves+="${waves:+ + }$w"
    startup=$(awk "BEGIN {print $startup + $w}")
  done
  local shards
  shards=$(ij_json bench | jq -r '.status.shards.total')
  # The same job on this machine: the cluster form with each export's local directory.
  local mounts="mounts:
  \"10.0.0.6:/fast\": $fast
  \"${ips[0]}:/nfs\": $dst
  \"${ips[1]}:/nfs\": $dst
  \"${ips[2]}:/nfs\": $dst"
  bench_yaml bench-run bench-run "$mounts" >"$data/bench-run.yaml"
  sync
  t0=$(now_s)
  local run_cpu TIMEFORMAT='%U %S'
  run_cpu=$({ time "$bin" run -q --file "$data/bench-run.yaml" --state "$data/bench-run-state" --shards "$shards" \
    >"$data/bench-run.out" 2>"$data/bench-run.err"; } 2>&1) ||
    fail "vfxt-ingest run failed (state in $data/bench-run-state): $(tail -n 5 "$data/bench-run.err")"
  t1=$(now_s)
  run_cpu=$(awk '{printf "%.2f", $1 + $2}' <<<"$run_cpu")
  # CPU seconds of each part of the rig while the operator ran its job (its pods reaped by then or not:
  # a pod still running at the verdict counts later).
  local tck cpu
  tck=$(getconf CLK_TCK)
  cpu=$(paste -d' ' <(tr ' ' '\n' <<<"$cpu0") <(tr ' ' '\n' <<<"$cpu1") | awk -v t="$tck" '{printf "%.2f ", ($2 - $1) / t}')
  read -r cpu_api cpu_etcd cpu_cm cpu_agent cpu_pods cpu_op <<<"$cpu"
  local run_s run_copy ident_op=true ident_run=true
  run_s=$(awk "BEGIN {print $t1 - $t0}")
  # Its copy phase, as its summary says ("this run, copy: ... over N s").
  run_copy=$(sed -n 's/^this run, copy: .* over \([0-9.]*\) s$/\1/p' "$data/bench-run.out")
  [[ -n $run_copy ]] || fail "no copy time in run's summary: $(cat "$data/bench-run.out")"
  same_tree "$fast/bench" "$dst/bench-op" || ident_op=false
  same_tree "$fast/bench" "$dst/bench-run" || ident_run=false
  local ratio ratio_bare ratio_applied
  ratio=$(awk "BEGIN {printf \"%.2f\", $op_s / ($run_s + $startup)}")
  ratio_applied=$(awk "BEGIN {printf \"%.2f\", ($op_s - $apply_s) / ($run_s + $startup)}")
  ratio_bare=$(awk "BEGIN {printf \"%.2f\", $op_s / $run_s}")
  printf '\n| path | seconds | files/s | identical |\n|---|---|---|---|\n'
  printf '| operator (claims: 3 worker pods, all IPs each) | %.1f | %.0f | %s |\n' "$op_s" "$(awk "BEGIN {print $n / $op_s}")" "$ident_op"
  printf '| vfxt-ingest run (3 worker processes) | %.1f | %.0f | %s |\n' "$run_s" "$(awk "BEGIN {print $n / $run_s}")" "$ident_run"
  printf '| pod start-up on the rig (scan + copy + verify waves: %s) | %.2f | | |\n' "$waves" "$startup"
  printf '\noperator / (run + pod start-up) = %s; operator / run = %s; %s shards\n' "$ratio" "$ratio_bare" "$shards"
  printf 'kubectl apply returned after %s s; the operator from then / (run + pod start-up) = %s\n' "$apply_s" "$ratio_applied"
  printf 'operator phases first seen (s after apply): %s%s@%.1fs; run'"'"'s copy phase: %s s\n' "$timeline" "$phase" "$op_s" "$run_copy"
  printf 'CPU seconds while the operator ran (%s cores): kube-apiserver %s, etcd %s, controller-manager %s, node agent %s, its pods %s, operator %s; vfxt-ingest run: %s\n' \
    "$(nproc)" "$cpu_api" "$cpu_etcd" "$cpu_cm" "$cpu_agent" "$cpu_pods" "$cpu_op" "$run_cpu"
  local json=${E2E_BENCH_JSON:-$data/bench.json}
  jq -n --argjson files "$n" --argjson shards "$shards" --argjson op "$op_s" --argjson run "$run_s" \
    --argjson startup "$startup" --argjson ratio "$ratio" --argjson applySeconds "$apply_s" --argjson ratioApplied "$ratio_applied" --argjson identOp "$ident_op" --argjson identRun "$ident_run" \
    --arg timeline "$timeline$phase@${op_s}s" --arg bin "$bin" --argjson runCopy "$run_copy" --arg waves "$waves" --arg machine "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)" \
    --argjson cpuApi "$cpu_api" --argjson cpuEtcd "$cpu_etcd" --argjson cpuCm "$cpu_cm" --argjson cpuAgent "$cpu_agent" \
    --argjson cpuPods "$cpu_pods" --argjson cpuOp "$cpu_op" --argjson cpuRun "$run_cpu" \
    '{files: $files, shards: $shards, operatorSeconds: $op, runSeconds: $run, podStartupSeconds: $startup,
      operatorOverRunPlusStartup: $ratio, kubectlApplySeconds: $applySeconds,
      operatorAfterApplyOverRunPlusStartup: $ratioApplied, identical: {operator: $identOp, run: $identRun}, binary: $bin, machine: $machine,
      phases: $timeline, runCopySeconds: $runCopy, podStartupWaves: $waves,
      cpuSecondsDuringOperator: {kubeApiserver: $cpuApi, etcd: $cpuEtcd, controllerManager: $cpuCm, nodeAgent: $cpuAgent,
        pods: $cpuPods, operator: $cpuOp}, cpuSecondsOfRun: $cpuRun}' >"$json"
  # Where the operator's time went: its log (timestamped), and each worker's log with file times.
  op_logs >"${json%.json}-operator.log" 2>&1 || true
  local f
  for f in "$e2e_run_dir"/agent/pods/"$ns"_bench-r0-*/containers/*/log; do
    [[ -f $f ]] && printf '%s %s\n' "$(stat -c '%w %y' "$f")" "$f"
  done >"${json%.json}-pod-logs.txt"
  say "JSON: $json (operator log and pod log times beside it)"
  $ident_op && $ident_run || fail "a copy is not identical: the figures do not count"
}

# The operator's requests to the API server with N claims workers (issue 13), for each N given: an
# IngestJob with one real worker and 2N shards; e2e-claims-sim adds N simulated workers (real pods,
# never scheduled, with real bound tokens) that each hold a shard and beat every 5 s; the operator's
# own counter (vfxt_ingest_api_requests_total) is read over a window. The job then finishes
# (the real worker takes the held shards when their leases run out) and must be identical.
api_load() {
  local n rows=() json=()
  for n in "$@"; do
    local name="api$n" out i
    # One small file per directory: the plan can make a shard of each (more shards than workers).
    mkdir -p "$src/$name"
    for ((i = 0; i < 2 * n + 10; i++)); do mkdir "$src/$name/d$i" && echo "$i" >"$src/$name/d$i/f"; done
    ij_workers=1 ij_shards=$((2 * n)) ij_apply "$name" "$name" /nfs || fail "kubectl apply $name"
    wait_for 600 "$name copying" phase_is "$name" Copying || fail "$name never reached Copying"
    say "api load: $n simulated workers on $name ($(ij_json "$name" | jq -r '.status.shards.total') shards)"
    out=$("$target/debug/e2e-claims-sim" --namespace "$ns" --ingestjob "$name" --workers "$n" \
      --claims-url "http://127.0.0.1:$port" --metrics-url "http://127.0.0.1:$port/metrics" \
      --seconds "${E2E_API_WINDOW:-60}") || fail "e2e-claims-sim ($n workers)"
    echo "$out"
    json+=("$(tail -n 1 <<<"$out")")
    rows+=("| $n | $(tail -n 1 <<<"$out" | jq -r '.apiRequestsPerSecond') | $(tail -n 1 <<<"$out" | jq -r '.byVerbAndResource | to_entries | map("\(.key) \(.value)") | join(", ")') |")
    wait_for 900 "$name finished" finished "$name" || fail "$name did not finish"
    [[ $(ij_phase "$name") == Succeeded ]] || fail "$name: $(ij_json "$name" | jq -c .status.message)"
    same_tree "$src/$name" "$dst/$name" || fail "$name: destination differs from source"
  done
  printf '\n| claims workers | operator API requests/s | by verb and resource (/s) |\n|---|---|---|\n'
  printf '%s\n' "${rows[@]}"
  local file=${E2E_API_JSON:-$data/api-load.json}
  printf '%s\n' "${json[@]}" | jq -s --arg machine "$(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)" \
    '{machine: $machine, runs: .}' >"$file"
  say "JSON: $file"
}
phase_is() { [[ $(ij_phase "$1") == "$2" ]]; }

# ---------------------------------------------------------------- 16. the admin policy
# pol_ij NAME PATCH: an IngestJob in $pns that the locked rules allow (run as uid 1000, 3 workers,
# 4 threads), deep-merged with the JSON PATCH of its spec.
pol_ij() {
  jq -n --arg name "$1" --arg ns "$pns" --argjson patch "$2" --argjson ips "$(printf '%s\n' "${ips[@]}" | jq -R . | jq -s .)" '
    {apiVersion: "ingest.vfxt.dev/v1alpha1", kind: "IngestJob", metadata: {name: $name, namespace: $ns},
     spec: {source: {nfs: {server: "10.0.0.5", path: "/export"}, subPath: "t3"},
            destination: {nfs: {servers: $ips, path: "/nfs"}, subPath: ("locked-" + $name)},
            workers: 3, threadsPerWorker: 4, worker: {securityContext: {runAsUser: 1000}}}} * {spec: $patch}'
}
# One case per rule: RULE PATCH (a spec that breaks only that rule).
policy_cases=(
  'servers {"source": {"nfs": {"server": "10.0.0.6"}}}'
  'exportPaths {"source": {"nfs": {"path": "/exports"}}}'
  'images {"worker": {"image": "other.invalid/miner:1"}}'
  'allowServiceAccount {"worker": {"serviceAccountName": "default"}}'
  'allowRoot {"worker": {"securityContext": {"runAsUser": 0}}}'
  'maxWorkers {"workers": 4}'
  'maxThreadsPerWorker {"threadsPerWorker": "auto"}'
)
vap_binding=vfxt-ingest-ingestjobs-vfxt-ingest-system
denied_by_operator() {
  local j
  j=$(kubectl get ij "$1" -n "$pns" -o json) || return 1
  jq -e --arg rule "admin policy rule $2:" '.status.phase == "Failed"
    and (.status.conditions[] | select(.type == "Ready") | .reason == "PolicyDenied" and (.message | contains($rule)))' <<<"$j" >/dev/null
}
unchecked_by_admission() { pol_ij probe '{"workers": 4}' | kubectl create --dry-run=server -f -; }
policy_denied_event() { # NAMESPACE
  kubectl get events -n "$1" --field-selector reason=PolicyDenied -o name | grep -q .
}

admitted_by_operator() {
  [[ -n $(kubectl get jobs -n "$pns" -l "ingest.vfxt.dev/job=$1" -o name) ]]
}
test_16_admin_policy() {
  local r=0 c rule patch name out saved=$data/vap-binding.json
  # 1. At admission: each case refused, naming its rule; the allowed job passes.
  pol_ij allowed '{}' | kubectl create --dry-run=server -f - >/dev/null 2>&1 || { bad "the allowed IngestJob was refused at admission"; r=1; }
  for c in "${policy_cases[@]}"; do
    rule=${c%% *} patch=${c#* }
    if out=$(pol_ij "${rule,,}" "$patch" | kubectl create -f - 2>&1); then
      bad "rule $rule: admitted"
      r=1
    elif ! grep -qF "admin policy rule $rule:" <<<"$out"; then
      bad "rule $rule: refused, but not naming the rule: $out"
      r=1
    else
      say "  refused at admission: ${out##*denied request: }"
    fi
  done
  # 2. Without the admission policy (a cluster without it, or jobs from before it): the operator
  # refuses each one itself, and runs the allowed one.
  kubectl get validatingadmissionpolicybinding "$vap_binding" -o json |
    jq 'del(.metadata.resourceVersion, .metadata.uid, .metadata.creationTimestamp, .metadata.generation, .metadata.managedFields)' >"$saved" ||
    { bad "no binding $vap_binding"; return 1; }
  kubectl delete validatingadmissionpolicybinding "$vap_binding" >/dev/null
  wait_for 30 "the API server no longer applies the admission policy" unchecked_by_admission || r=1
  pol_ij allowed '{}' | kubectl create -f - >/dev/null || { bad "create the allowed IngestJob"; r=1; }
  for c in "${policy_cases[@]}"; do
    rule=${c%% *} patch=${c#* }
    pol_ij "${rule,,}" "$patch" | kubectl create -f - >/dev/null || { bad "create ${rule,,}"; r=1; }
  done
  for c in "${policy_cases[@]}"; do
    rule=${c%% *} name=${rule,,}
    wait_for 60 "$name: Failed, PolicyDenied naming rule $rule" denied_by_operator "$name" "$rule" || r=1
    [[ -z $(kubectl get jobs,configmaps -n "$pns" -l "ingest.vfxt.dev/job=$name" -o name) ]] ||
      { bad "$name: children created for a denied IngestJob"; r=1; }
  done
  wait_for 60 "the allowed IngestJob runs (its scan Job exists)" admitted_by_operator allowed || r=1
  # The Event is recorded after the status is written: waited for, not read once.
  wait_for 60 "a PolicyDenied Event in $pns" policy_denied_event "$pns" || r=1
  # The admission policy back; the jobs go (deleting is not checked by the policy).
  kubectl create -f "$saved" >/dev/null || { bad "restore $vap_binding"; r=1; }
  kubectl delete ij --all -n "$pns" --timeout=60s >/dev/null || { bad "delete the IngestJobs of $pns"; r=1; }
  return "$r"
}

# ---------------------------------------------------------------- 17. a leader takeover
lease_json() { kubectl get lease vfxt-ingest-leader -n "$op_ns" -o json; }
lease_holder() { lease_json | jq -r '.spec.holderIdentity // ""'; }
two_operators_running() {
  [[ $(kubectl get pods -n "$op_ns" -l app.kubernetes.io/instance=vfxt-ingest -o json |
    jq '[.items[] | select(.status.phase == "Running" and .metadata.deletionTimestamp == null)] | length') == 2 ]]
}
held_by() { [[ $(lease_holder) == "$1" ]]; }
test_17_leader_takeover() {
  local r=0 leader standby pid before renewed took
  helm upgrade vfxt-ingest "$repo/charts/vfxt-ingest" -n "$op_ns" --reuse-values --set replicas=2 >/dev/null ||
    { bad "helm upgrade --set replicas=2"; return 1; }
  wait_for 90 "two operator replicas Running (one port: SO_REUSEPORT on the shared host network)" two_operators_running || return 1
  leader=$(lease_holder)
  standby=$(kubectl get pods -n "$op_ns" -l app.kubernetes.io/instance=vfxt-ingest -o json |
    jq -r --arg l "$leader" '.items[] | select(.metadata.name != $l and .metadata.deletionTimestamp == null) | .metadata.name')
  say "  leader $leader, standby $standby, claims address on the Lease: $(lease_json | jq -r '.metadata.annotations["ingest.vfxt.dev/claims-address"]')"
  [[ -n $leader && -n $standby ]] || { bad "no leader or no standby"; return 1; }
  gen_tree "$src/t17" 300
  watch_ij t17
  ij_apply t17 t17 /slow || { bad "kubectl apply IngestJob t17"; return 1; }
  wait_for 120 "t17 Copying with some progress" copying_with_progress t17 || return 1
  before=$(job_uids t17)
  pid=$(kubectl get pod "$leader" -n "$op_ns" -o json | jq -r '.status.containerStatuses[0].containerID')
  pid=${pid#agent://}
  # The leader hangs (a node lost, a process stuck): it renews nothing and answers nothing. Then it
  # is killed; its container comes back in the same pod, as a standby.
  kill -STOP "$pid" || { bad "SIGSTOP operator pid $pid"; return 1; }
  renewed=$(lease_json | jq -r '.spec.renewTime')
  say "  froze the leader (pid $pid) in phase Copying at $(ij_json t17 | jq -r '.status.progress.files') files; its last renewal $renewed"
  wait_for 60 "the standby $standby holds the Lease" held_by "$standby" || { kill -KILL "$pid"; return 1; }
  kill -KILL "$pid" 2>/dev/null || true
  # From the Lease's own times (not this script's polling): the old holder's last renewal to the
  # new holder's acquireTime.
  took=$(awk -v a="$(date -d "$renewed" +%s.%N)" -v b="$(date -d "$(lease_json | jq -r '.spec.acquireTime')" +%s.%N)" \
    'BEGIN { printf "%.1f", b - a }')
  say "  taken over ${took} s after the frozen leader's last renewal (Lease duration 15 s; a standby tries again just after it runs out)"
  awk -v t="$took" 'BEGIN { exit !(t >= 15 && t <= 17) }' ||
    { bad "the takeover came ${took} s after the last renewal: want within 2 s after the Lease duration (15 s), never before"; r=1; }
  [[ $(lease_json | jq -r '.metadata.annotations["ingest.vfxt.dev/claims-address"]') != null ]] ||
    { bad "the new leader wrote no claims address on the Lease"; r=1; }
  wait_for 180 "IngestJob t17 finished" finished t17 || return 1
  wait_for 15 "the watch of t17 recorded its end" watched_to_end t17 || return 1
  [[ $(ij_phase t17) == Succeeded ]] || { bad "t17 ended $(ij_phase t17): $(ij_json t17 | jq -c '.status.conditions')"; return 1; }
  local after line shards
  after=$(job_uids t17)
  while read -r line; do
    grep -qxF "$line" <<<"$after" || { bad "Job ${line%% *} was re-created or lost across the takeover"; r=1; }
  done <<<"$before"
  [[ $(children jobs t17 | jq -r '.items[] | .metadata.labels["ingest.vfxt.dev/role"]' | sort | tr '\n' ' ') == "copy scan verify " ]] ||
    { bad "Jobs of t17 are not one scan, one copy and one verify"; r=1; }
  shards=$(ij_json t17 | jq -c '.status.shards')
  jq -e '.succeeded == .total and .failed == 0' <<<"$shards" >/dev/null || { bad "shards after the takeover: $shards"; r=1; }
  progress_monotonic t17 || r=1
  same_tree "$src/t17" "$slow/backing/t17" || { bad "destination differs from source"; r=1; }
  held_by "$standby" || { bad "the Lease went back to $(lease_holder)"; r=1; }
  # Back to one replica, the new leader kept.
  op_pod=$standby
  helm upgrade vfxt-ingest "$repo/charts/vfxt-ingest" -n "$op_ns" --reuse-values --set replicas=1 >/dev/null ||
    { bad "helm upgrade --set replicas=1"; r=1; }
  return "$r"
}

main() {
  if [[ ${1-} == --api-load ]]; then
    # The chart's default status interval (the tests use 1 s to run faster): what a user's operator costs.
    E2E_STATUS_INTERVAL=${E2E_STATUS_INTERVAL:-5}
    selected=(2)
    setup
    run_test "2 operator from helm install, under the chart's RBAC" test_2_helm_install
    ((failed == 0)) || fail "the operator did not come up"
    shift
    (($#)) || set -- 100 500
    api_load "$@"
    return
  fi
  if [[ ${1-} == --bench ]]; then
    selected=(2)
    data_on_tmpfs=1
    setup
    run_test "2 operator from helm install, under the chart's RBAC" test_2_helm_install
    ((failed == 0)) || fail "the operator did not come up"
    bench "${2:-20000}"
    return
  fi
  selected=("$@")
  setup
  run_test "1 CRD accepted, bad IngestJobs rejected naming the field" test_1_crd_validation
  run_test "2 operator from helm install, under the chart's RBAC" test_2_helm_install
  run_test "3 full run: phases, identical copy, totals, all cluster IPs" test_3_full_run
  run_test "4 worker killed mid-copy: shard retried, verification clean" test_4_worker_killed
  run_test "5 operator killed mid-job: finishes, no duplicate Jobs, no progress reset" test_5_operator_killed
  run_test "6 deleting the IngestJob removes its children, not the data" test_6_delete
  run_test "7 two IngestJobs in one namespace, runs 0 and 2: both Succeeded, neither regresses" test_7_two_jobs_one_namespace
  run_test "8 finished pods deleted by hand, policy edited: the verdict stays" test_8_verdict_survives_pod_deletion
  run_test "9 FailJob: a failed shard stops the run, no verify Job" test_9_fail_job_stops
  run_test "10 status progress moves during a copy phase of ~200 short pods" test_10_progress_with_many_short_pods
  run_test "11 an unreadable source directory: one failed entry, weighed by the policy" test_11_unreadable_directory
  run_test "12 one of three IPs at a quarter capacity: shared queue, identical" test_12_one_node_at_a_quarter_capacity
  run_test "13 one of three IPs stops answering mid-copy: named Unresponsive, Succeeded, identical" test_13_one_node_stops_answering
  run_test "14 a dry run writes nothing and says what a pass would do; the pass then copies" test_14_dry_run_then_copy
  run_test "15 three passes to a cutover: bulk, delta, final Mirror with Checksum" test_15_three_passes
  run_test "16 the admin policy: each rule refused at admission, and by the operator without it" test_16_admin_policy
  run_test "17 two operator replicas: the leader hangs mid-job, the standby takes over, the job finishes" test_17_leader_takeover

  say "operator e2e: $((SECONDS - t_start)) s in all"
  ((failed == 0)) || say "failed: ${failed_names[*]}"
  echo "$passed passed, $failed failed"
  ((failed == 0))
}

# Everything runs from functions, and exit on the same line: bash has read this whole file before the
# first test starts and reads nothing after, so editing the file during a run cannot change that run.
{ main "$@"; exit; }

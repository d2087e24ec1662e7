#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Smoke test of the control plane alone (no node): version, namespace, a Job
# whose pod the job controller creates (it stays Pending: nothing schedules
# it), and the garbage collector deleting that pod when the Job is deleted
# with foreground propagation. Tears down at the end; on failure prints the
# last 50 lines of every component log.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# shellcheck disable=SC2119 # no options: the plane alone
e2e_up
ns=smoke
e2e_on_failure() {
  kubectl get all -n "$ns" -o wide
  kubectl get events -n "$ns"
  kubectl get jobs -n "$ns" -o yaml
}

server=$(kubectl version -o json | sed -n '/"serverVersion"/,/}/s/.*"gitVersion": "\(.*\)".*/\1/p')
client=$(kubectl version -o json | sed -n '/"clientVersion"/,/}/s/.*"gitVersion": "\(.*\)".*/\1/p')
[[ $server == v1.36.3 ]] || fail "server version is '$server', want v1.36.3"
[[ $client == v1.36.3 ]] || fail "kubectl version is '$client', want v1.36.3"
say "ok: kubectl and server are $server"

kubectl create namespace "$ns" >/dev/null
# The serviceaccount controller creates "default"; pods are refused until then.
wait_until 60 "default service account in $ns" kubectl get serviceaccount default -n "$ns"
wait_until 60 "kube-root-ca.crt published in $ns" kubectl get configmap kube-root-ca.crt -n "$ns"

kubectl apply -f - >/dev/null <<YAML
apiVersion: batch/v1
kind: Job
metadata: {name: smoke, namespace: $ns}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - {name: main, image: busybox, command: [sleep, "3600"]}
YAML
pod_of_job() { kubectl get pods -n "$ns" -l batch.kubernetes.io/job-name=smoke -o jsonpath='{.items[*].metadata.name}'; }
wait_until 60 "job controller created the Job's pod" test -n "$(pod_of_job)"
pod=$(pod_of_job)
phase=$(kubectl get pod -n "$ns" "$pod" -o jsonpath='{.status.phase}')
node=$(kubectl get pod -n "$ns" "$pod" -o jsonpath='{.spec.nodeName}')
owner=$(kubectl get pod -n "$ns" "$pod" -o jsonpath='{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}')
[[ $phase == Pending && -z $node ]] || fail "pod $pod: phase '$phase' node '$node', want Pending with no node"
[[ $owner == Job/smoke ]] || fail "pod $pod is owned by '$owner', want Job/smoke"
say "ok: pod $pod is Pending, unscheduled, owned by Job/smoke"

kubectl delete job smoke -n "$ns" --cascade=foreground --wait=false >/dev/null
pod_gone() { ! kubectl get pod -n "$ns" "$pod" >/dev/null 2>&1; }
job_gone() { ! kubectl get job -n "$ns" smoke >/dev/null 2>&1; }
wait_until 60 "garbage collector deleted pod $pod" pod_gone
wait_until 60 "Job smoke is gone (foreground deletion finished)" job_gone

# helm against this API server: a chart from `helm create` installs (its
# pods stay Pending: no node) and uninstalls.
chart=$(mktemp -d "${TMPDIR:-/tmp}/vfxt-e2e-chart.XXXXXX")
helm create "$chart/demo" >/dev/null
helm install demo "$chart/demo" -n "$ns" >/dev/null
[[ $(helm list -n "$ns" --deployed -q) == demo ]] ||
  fail "helm release demo is not deployed: $(helm status demo -n "$ns")"
kubectl get deployment demo -n "$ns" >/dev/null || fail "helm did not create Deployment demo"
helm uninstall demo -n "$ns" >/dev/null
rm -rf "$chart"
say "ok: helm $(helm version --short) installed and uninstalled a chart"

kubectl delete namespace "$ns" --wait=false >/dev/null
ns_gone() { ! kubectl get namespace "$ns" >/dev/null 2>&1; }
wait_until 90 "namespace controller removed namespace $ns" ns_gone
say "smoke: all checks passed"
echo "smoke: 1 passed, 0 failed"

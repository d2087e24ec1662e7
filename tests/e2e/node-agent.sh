#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Integration test of the test node agent on the real control plane:
#  1. an Indexed Job of 3 completions writes $JOB_COMPLETION_INDEX to
#     /out/$HOSTNAME through an NFS volume; the three files land in the local
#     dir that the three "cluster IPs" all map to, and the Job is Complete;
#  2. a failing pod reports exit code and termination message;
#  3. a PVC bound to an NFS PV, a read-only mount, ConfigMap/Secret env and
#     volumes all show up inside the container as a real pod would see them;
#  4. deleting a pod that ignores SIGTERM kills it after the grace period and
#     the object goes away;
#  5. OnFailure restarts, and a container killed from outside reports 137.
set -euo pipefail
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

data=$(mktemp -d "${TMPDIR:-/tmp}/vfxt-e2e-nfs.XXXXXX")
mkdir -p "$data/sub"
# Three node IPs of one cache cluster serve the same export: one local dir.
e2e_up --agent \
  --nfs-map "10.1.1.101:/nfs=$data" --nfs-map "10.1.1.102:/nfs=$data" --nfs-map "10.1.1.103:/nfs=$data"
ns=agent-test
passed=0
pass() {
  say "ok: $*"
  passed=$((passed + 1))
}
e2e_on_failure() {
  kubectl get pods -n "$ns" -o wide
  kubectl get pods -n "$ns" -o jsonpath='{range .items[*]}{.metadata.name}{": "}{.status.containerStatuses}{"\n"}{end}'
  for f in "$e2e_run_dir"/agent/pods/*/containers/*/log; do
    echo "----- $f" && tail -n 20 "$f"
  done
}

kubectl create namespace "$ns" >/dev/null
wait_until 60 "default service account in $ns" kubectl get serviceaccount default -n "$ns"

# ---- 1. Indexed Job through an NFS volume.
kubectl apply -f - >/dev/null <<YAML
apiVersion: batch/v1
kind: Job
metadata: {name: idx, namespace: $ns}
spec:
  completions: 3
  parallelism: 3
  completionMode: Indexed
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: ignored
        command: [sh, -c, 'echo \$JOB_COMPLETION_INDEX > /out/\$HOSTNAME']
        volumeMounts: [{name: out, mountPath: /out}]
      volumes:
      - name: out
        nfs: {server: 10.1.1.102, path: /nfs}
YAML
job_complete() {
  [[ $(kubectl get job idx -n "$ns" -o jsonpath='{.status.conditions[?(@.type=="Complete")].status}') == True ]]
}
wait_until 90 "Job idx Complete" job_complete
for i in 0 1 2; do
  # Indexed Job pods get the hostname <job>-<index>.
  [[ -f $data/idx-$i ]] || fail "missing $data/idx-$i (files: $(ls "$data"))"
  [[ $(cat "$data/idx-$i") == "$i" ]] || fail "$data/idx-$i holds '$(cat "$data/idx-$i")', want $i"
done
pass "3 indexed completions wrote idx-0..2 with their index into the mapped NFS dir"

# ---- 2. A failing pod: exit code and termination message.
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: fails, namespace: $ns}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: ignored
    command: [sh, -c, 'echo "shard 7: disk on fire" > /dev/termination-log; exit 3']
YAML
phase_is() { [[ $(kubectl get pod "$2" -n "$ns" -o jsonpath='{.status.phase}') == "$1" ]]; }
wait_until 60 "pod fails is Failed" phase_is Failed fails
term() { kubectl get pod "$1" -n "$ns" -o jsonpath="{.status.containerStatuses[0].state.terminated.$2}"; }
[[ $(term fails exitCode) == 3 ]] || fail "exitCode $(term fails exitCode), want 3"
[[ $(term fails reason) == Error ]] || fail "reason $(term fails reason), want Error"
[[ $(term fails message) == "shard 7: disk on fire" ]] || fail "message '$(term fails message)'"
[[ -n $(term fails startedAt) && -n $(term fails finishedAt) ]] || fail "no startedAt/finishedAt"
pass "failing pod: exit code 3, reason Error, termination message reported"

# ---- 3. PVC on an NFS PV, read-only mount, ConfigMap/Secret env and volumes.
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolume
metadata: {name: $ns-pv}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteMany]
  storageClassName: ""
  mountOptions: [hard, nconnect=4]
  nfs: {server: 10.1.1.103, path: /nfs/sub}
  claimRef: {namespace: $ns, name: claim}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: claim, namespace: $ns}
spec:
  accessModes: [ReadWriteMany]
  storageClassName: ""
  volumeName: $ns-pv
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: $ns}
data: {mode: fast, plan.json: '{"shards": 4}'}
---
apiVersion: v1
kind: Secret
metadata: {name: creds, namespace: $ns}
stringData: {password: hunter2}
---
apiVersion: v1
kind: Pod
metadata: {name: mounts, namespace: $ns, annotations: {example.dev/shard: "5"}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: ignored
    command: [sh, -c]
    args:
    - |
      set -e
      echo "\$MODE \$PASSWORD \$SHARD \$POD_NS" > /dest/env.txt
      cat /plan/plan.json > /dest/plan-copy.json
      sa=/var/run/secrets/kubernetes.io/serviceaccount
      curl -sS --cacert \$sa/ca.crt -H "Authorization: Bearer \$(cat \$sa/token)" \\
        "https://\$KUBERNETES_SERVICE_HOST:\$KUBERNETES_SERVICE_PORT/api/v1/namespaces/\$(cat \$sa/namespace)/secrets" > /dest/api.json
      test "\$HOME" != /root
      if touch /src/x 2>/dev/null; then echo "/src is writable" >&2; exit 9; fi
    env:
    - {name: MODE, valueFrom: {configMapKeyRef: {name: settings, key: mode}}}
    - {name: PASSWORD, valueFrom: {secretKeyRef: {name: creds, key: password}}}
    - {name: SHARD, valueFrom: {fieldRef: {fieldPath: "metadata.annotations['example.dev/shard']"}}}
    - {name: POD_NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
    terminationMessagePolicy: FallbackToLogsOnError
    volumeMounts:
    - {name: dest, mountPath: /dest}
    - {name: src, mountPath: /src, readOnly: true}
    - {name: plan, mountPath: /plan}
  volumes:
  - {name: dest, persistentVolumeClaim: {claimName: claim}}
  - {name: src, nfs: {server: 10.1.1.101, path: /nfs}}
  - {name: plan, configMap: {name: settings}}
YAML
wait_until 90 "pod mounts Succeeded" phase_is Succeeded mounts
[[ $(cat "$data/sub/env.txt") == "fast hunter2 5 $ns" ]] || fail "env.txt holds '$(cat "$data/sub/env.txt")'"
[[ $(cat "$data/sub/plan-copy.json") == '{"shards": 4}' ]] || fail "plan-copy.json holds '$(cat "$data/sub/plan-copy.json")'"
[[ ! -e $data/x ]] || fail "the read-only mount was written to"
# The API server knew the pod's token (403 names the service account, where a
# bad token would get 401), reached through the in-cluster env and CA.
grep -q "system:serviceaccount:$ns:default" "$data/sub/api.json" || fail "in-cluster API call: $(cat "$data/sub/api.json")"
pass "PVC on an NFS PV, read-only NFS mount, ConfigMap/Secret env + volume, in-cluster API with the SA token"

# ---- 4. Deletion: SIGTERM ignored, SIGKILL after the grace period, object gone.
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: stubborn, namespace: $ns}
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: main
    image: ignored
    # \$\$\$\$: the kubelet turns \$\$ into \$ in commands (the agent too), leaving sh's \$\$.
    command: [sh, -c, 'trap "" TERM; echo \$\$\$\$ > /out/stubborn.pid; while true; do sleep 0.2; done']
    volumeMounts: [{name: out, mountPath: /out}]
  volumes:
  - {name: out, nfs: {server: 10.1.1.101, path: /nfs}}
YAML
wait_until 60 "pod stubborn Running" phase_is Running stubborn
wait_until 10 "stubborn wrote its pid" test -s "$data/stubborn.pid"
pid=$(cat "$data/stubborn.pid")
kill -0 "$pid" || fail "stubborn's shell (pid $pid) is not running"
t0=$SECONDS
kubectl delete pod stubborn -n "$ns" --wait=true --timeout=60s >/dev/null
took=$((SECONDS - t0))
! kill -0 "$pid" 2>/dev/null || fail "stubborn's shell (pid $pid) survived deletion"
((took >= 2)) || fail "pod went away after ${took}s, before its 2s grace period"
pass "deleted pod ignoring SIGTERM was killed after its grace period (${took}s) and removed"

# ---- 5. restartPolicy OnFailure restarts a failed container (restartCount,
# lastState); a container killed from outside (as a test kills a worker, by
# the pid in containerID agent://PID) fails with 137 under Never.
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: flaky, namespace: $ns}
spec:
  restartPolicy: OnFailure
  containers:
  - name: main
    image: ignored
    # Fails on the first run only: the marker survives in the NFS dir.
    command: [sh, -c, 'if [ -e /out/flaky.seen ]; then exit 0; fi; touch /out/flaky.seen; exit 4']
    volumeMounts: [{name: out, mountPath: /out}]
  volumes:
  - {name: out, nfs: {server: 10.1.1.103, path: /nfs}}
---
apiVersion: v1
kind: Pod
metadata: {name: victim, namespace: $ns}
spec:
  restartPolicy: Never
  containers:
  - {name: main, image: ignored, command: [sleep, "600"]}
YAML
wait_until 60 "pod flaky Succeeded after a restart" phase_is Succeeded flaky
cs() { kubectl get pod "$1" -n "$ns" -o jsonpath="{.status.containerStatuses[0].$2}"; }
[[ $(cs flaky restartCount) == 1 ]] || fail "flaky restartCount $(cs flaky restartCount), want 1"
[[ $(cs flaky lastState.terminated.exitCode) == 4 ]] || fail "flaky lastState exit $(cs flaky lastState.terminated.exitCode), want 4"
wait_until 60 "pod victim Running" phase_is Running victim
victim_pid=$(cs victim containerID)
victim_pid=${victim_pid#agent://}
kill -KILL "$victim_pid"
wait_until 30 "pod victim Failed after SIGKILL" phase_is Failed victim
[[ $(term victim exitCode) == 137 ]] || fail "victim exitCode $(term victim exitCode), want 137"
pass "OnFailure restart (restartCount 1, lastState exit 4); killed container reports 137"

kubectl delete namespace "$ns" --wait=false >/dev/null
kubectl delete pv "$ns-pv" --wait=false >/dev/null
rm -rf "$data"
echo "node-agent: $passed passed, 0 failed"

#!/usr/bin/env bash
# Prints a pod's container logs as the test node agent kept them (kubectl logs
# does not work: there is no kubelet API). Usage:
#   pod-logs.sh NAMESPACE POD [CONTAINER]      (run dir from $VFXT_E2E_RUN_DIR)
set -euo pipefail
ns=${1:?usage: pod-logs.sh NAMESPACE POD [CONTAINER]}
pod=${2:?usage: pod-logs.sh NAMESPACE POD [CONTAINER]}
run_dir=${VFXT_E2E_RUN_DIR:?set VFXT_E2E_RUN_DIR (eval the output of up.sh)}
shopt -s nullglob
# Pod dirs are <ns>_<pod>_<uid>: a re-created pod of the same name has its own.
if [[ -n ${3-} ]]; then
  logs=("$run_dir/agent/pods/${ns}_${pod}_"*"/containers/$3/log")
else
  logs=("$run_dir/agent/pods/${ns}_${pod}_"*/containers/*/log)
fi
((${#logs[@]})) || { echo "pod-logs.sh: no logs for $ns/$pod${3:+ container $3} under $run_dir/agent/pods" >&2; exit 1; }
for f in "${logs[@]}"; do
  ((${#logs[@]} == 1)) || echo "==> $f <=="
  cat "$f"
done

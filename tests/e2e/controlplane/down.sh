#!/usr/bin/env bash
# Stops what up.sh started in a run dir (the argument, else $VFXT_E2E_RUN_DIR):
# the node agent first (so its pod processes go with it), then the
# controller-manager, the API server and etcd. Each was started with setsid, so
# its pid is also its process group: the group gets SIGTERM, then SIGKILL after
# 10 s. Logs and certs stay in the run dir; pass --purge to delete it too.
set -euo pipefail

purge=0
run_dir=""
for a in "$@"; do
  case $a in
  --purge) purge=1 ;;
  *) run_dir=$a ;;
  esac
done
run_dir=${run_dir:-${VFXT_E2E_RUN_DIR-}}
if [[ -z $run_dir || ! -d $run_dir/pids ]]; then
  echo "down.sh: no run dir (give it as an argument or set VFXT_E2E_RUN_DIR); got '${run_dir}'" >&2
  exit 2
fi

stop() {
  local f=$run_dir/pids/$1.pid pid
  [[ -f $f ]] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "down.sh: $1 (pid $pid) ignored SIGTERM for 10s; killing" >&2
      kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  # The group may hold children that outlived their leader (pod processes).
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$f"
  echo "down.sh: stopped $1" >&2
}

for c in test-node-agent kube-controller-manager kube-apiserver etcd; do
  stop "$c"
done
if ((purge)); then
  rm -rf "$run_dir"
  echo "down.sh: removed $run_dir" >&2
else
  echo "down.sh: logs kept in $run_dir/logs" >&2
fi

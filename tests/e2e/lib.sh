# Helpers shared by the e2e test scripts (smoke.sh, node-agent.sh).
# shellcheck shell=bash

e2e_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
e2e_run_dir=""

say() { echo "[$(date +%H:%M:%S)] $*" >&2; }

# Brings the plane up with up.sh's options and exports its environment.
# The EXIT trap tears it down and, on failure, prints each component's log tail.
e2e_up() {
  local out
  out=$("$e2e_dir/controlplane/up.sh" "$@") || { say "up.sh failed"; return 1; }
  eval "$out"
  e2e_run_dir=$VFXT_E2E_RUN_DIR
  trap e2e_exit EXIT
}

e2e_exit() {
  local rc=$?
  if ((rc)) && [[ -n $e2e_run_dir ]]; then
    say "FAILED (rc=$rc); run dir $e2e_run_dir"
    for f in "$e2e_run_dir"/logs/*.log; do
      echo "----- last 50 lines of $f" >&2
      tail -n 50 "$f" >&2
    done
    e2e_on_failure 2>/dev/null || true
  fi
  if [[ -n $e2e_run_dir ]]; then
    "$e2e_dir/controlplane/down.sh" "$e2e_run_dir" || true
  fi
  exit "$rc"
}

# Tests may define e2e_on_failure to print more (pod statuses, agent files).
e2e_on_failure() { :; }

fail() {
  say "FAIL: $*"
  exit 1
}

# wait_until SECONDS DESCRIPTION COMMAND...: polls every second.
wait_until() {
  local secs=$1 what=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || fail "timed out after ${secs}s waiting for: $what"
    sleep 1
  done
  say "ok: $what"
}

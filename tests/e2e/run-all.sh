#!/usr/bin/env bash
# Every e2e test on the real control plane, one entry point for CI:
#   1. build: the pinned control plane (controlplane/build.sh, a no-op when cached), the node agent,
#      vfxt-ingest and the e2e helpers (cargo, debug);
#   2. smoke.sh, node-agent.sh, operator/operator.sh, one after the other, each bringing its own plane
#      up and down (its EXIT trap tears it down however it ends; so does this script's on Ctrl-C).
# Each script's output and run dir (control-plane logs, pod logs, test data) go under one log dir; a
# script that passes has its part removed, a failed one's is kept and the dir is printed at the end.
# Usage: tests/e2e/run-all.sh [--keep-logs] [SCRIPT...]   (default: all three; names as above)
# Ends with "N passed, M failed" (scripts); exits 1 if any failed. Needs root, as the scripts do.
set -euo pipefail
e2e=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$e2e/../.." && pwd)
keep=0
scripts=()
for a in "$@"; do
  case $a in
  --keep-logs) keep=1 ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed 's/^# \{0,1\}//; /^set -euo/d'; exit 0 ;;
  -*) echo "run-all.sh: unknown option '$a' (try --help)" >&2; exit 2 ;;
  *) scripts+=("$a") ;;
  esac
done
((${#scripts[@]})) || scripts=(smoke.sh node-agent.sh operator/operator.sh)
for s in "${scripts[@]}"; do
  [[ -x $e2e/$s ]] || { echo "run-all.sh: no test script $e2e/$s (known: smoke.sh node-agent.sh operator/operator.sh)" >&2; exit 2; }
done

say() { echo "[$(date +%H:%M:%S)] $*" >&2; }
logs=$(mktemp -d "${TMPDIR:-/tmp}/vfxt-e2e-logs.XXXXXX")
start=$SECONDS
current=""
on_exit() {
  local rc=$?
  # A script still running (Ctrl-C, a kill of this script): stop it so its own trap tears its plane down.
  if [[ -n $current ]] && kill -0 "$current" 2>/dev/null; then
    kill -TERM "$current" 2>/dev/null || true
    wait "$current" 2>/dev/null || true
    say "interrupted; logs kept in $logs"
  fi
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

t0=$SECONDS
say "build: control plane (cached when the pins are unchanged)"
"$e2e/controlplane/build.sh" >"$logs/build.log" 2>&1 || { tail -n 40 "$logs/build.log" >&2; say "control plane build failed; log: $logs/build.log"; exit 1; }
say "build: cargo build -p test-node-agent -p vfxt-ingest -p e2e-tests"
(cd "$repo" && nice -n 10 cargo build -p test-node-agent -p vfxt-ingest -p e2e-tests) >>"$logs/build.log" 2>&1 ||
  { tail -n 40 "$logs/build.log" >&2; say "cargo build failed; log: $logs/build.log"; exit 1; }
build_secs=$((SECONDS - t0))
say "build: ${build_secs}s"

passed=0 failed=0 summary=()
for s in "${scripts[@]}"; do
  name=${s//\//-}
  name=${name%.sh}
  dir=$logs/$name
  mkdir -p "$dir"
  say "run: $s (log: $dir/output.log)"
  t0=$SECONDS
  # TMPDIR: the script's plane run dir and test data land in $dir, kept with its output on failure.
  # The agent binary was just built: up.sh uses it instead of running cargo again.
  TMPDIR=$dir VFXT_E2E_AGENT_BIN=${CARGO_TARGET_DIR:-$repo/target}/debug/test-node-agent \
    "$e2e/$s" >"$dir/output.log" 2>&1 &
  current=$!
  rc=0
  wait "$current" || rc=$?
  current=""
  secs=$((SECONDS - t0))
  last=$(grep -oE '[0-9]+ passed, [0-9]+ failed' "$dir/output.log" | tail -n 1 || true)
  if ((rc == 0)); then
    passed=$((passed + 1))
    summary+=("PASS $s (${secs}s) ${last}")
    ((keep)) || rm -rf "$dir"
  else
    failed=$((failed + 1))
    summary+=("FAIL $s (${secs}s, exit $rc) ${last} - output: $dir/output.log")
    echo "----- last 40 lines of $s" >&2
    tail -n 40 "$dir/output.log" >&2
  fi
done

echo
printf '%s\n' "${summary[@]}"
echo "build ${build_secs}s, total $((SECONDS - start))s"
if ((failed)) || ((keep)); then
  echo "logs kept in $logs"
else
  rm -rf "$logs"
fi
echo "$passed passed, $failed failed"
((failed == 0))

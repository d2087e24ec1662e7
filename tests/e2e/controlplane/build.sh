#!/usr/bin/env bash
# Builds the e2e control plane (kube-apiserver, kube-controller-manager, kubectl,
# etcd, helm) from Go modules at the versions pinned in pins.env.
#
# Binaries land in ${VFXT_CACHE:-$HOME/.cache/vfxt-ingest}/controlplane/<pin-id>/bin,
# outside the repo. <pin-id> hashes pins.env and this script, so editing either
# rebuilds into a fresh directory and a no-op run costs only the hash.
# Each component is stamped when it builds, so a failure in one (say etcd)
# keeps the others cached.
#
# Usage: build.sh            build what is missing, print the bin dir and times
#        build.sh --print-bin-dir   only print the bin dir (no build)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"
# shellcheck source=pins.env
source "$here/pins.env"

dir=$(cp_pin_dir)
bin=$dir/bin
# The Kubernetes binaries the e2e rig runs (built from k8s.io/kubernetes/cmd/NAME).
KUBE_CMDS=(kube-apiserver kube-controller-manager kubectl)

if [[ ${1-} == --print-bin-dir ]]; then
  echo "$bin"
  exit 0
fi

start=$(date +%s.%N)
mkdir -p "$bin" "$dir/src" "$dir/logs"

# Shared module and build caches (the defaults), so the lead's other Go builds
# and repeat runs reuse downloads. -trimpath keeps the cache dir out of binaries.
export GOFLAGS="-trimpath -buildvcs=false"
# Build with the Go we have; never fetch a toolchain (only registries are reachable).
export GOTOOLCHAIN=local
export CGO_ENABLED=0
gobuild() { nice -n 10 go "$@"; }

built_any=0
failed=()

# Writes go.mod of a wrapper module. $1 = dir, $2 = module name; the rest of
# the go.mod comes on stdin.
write_gomod() {
  mkdir -p "$1"
  { echo "module $2"; echo; echo "go 1.26.0"; echo; cat; } >"$1/go.mod"
}

# k8s.io/kubernetes keeps its staging modules (k8s.io/api, client-go, ...) as
# local `replace`s to ./staging, which do not apply when it is a dependency.
# Take the list from its own go.mod and point each at the published v0.x tag.
staging_replaces() {
  local gomod
  gomod=$(cd "$dir/src" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [[ -f $gomod ]] || { echo "cannot find go.mod of k8s.io/kubernetes@$KUBERNETES_VERSION" >&2; return 1; }
  awk '/^replace \(/{inside=1; next} inside && /^\)/{inside=0} inside && $2=="=>" && $3 ~ /^\.\/staging\// {print $1}' "$gomod" |
    while read -r m; do echo "	$m => $m $KUBERNETES_STAGING_VERSION"; done
}

build_kube() {
  local w=$dir/src/kube
  local cmds=("${KUBE_CMDS[@]}")
  local replaces
  replaces=$(staging_replaces)
  [[ -n $replaces ]] || { echo "no staging replaces found" >&2; return 1; }
  write_gomod "$w" vfxt-ingest.test/controlplane/kube <<EOF
require k8s.io/kubernetes $KUBERNETES_VERSION

replace (
$replaces
)
EOF
  {
    echo "//go:build tools"
    echo
    echo "// Package tools pins the commands this module builds, so go mod tidy keeps them."
    echo "package tools"
    echo
    echo "import ("
    for c in "${cmds[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$c\""; done
    echo ")"
  } >"$w/tools.go"
  (cd "$w" && gobuild mod tidy)

  # Stamp the version the way hack/lib/version.sh does, so clients see the pin.
  # No git checkout here: gitCommit carries the module's checksum instead, which
  # names the exact source as well.
  local ver=${KUBERNETES_VERSION#v} major minor date sum
  major=${ver%%.*}
  minor=${ver#*.}
  minor=${minor%%.*}
  sum=$(cd "$w" && go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/^[[:space:]]*"Sum": "\(.*\)",$/\1/p')
  date=$(cd "$w" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)
  local ldflags="-s -w"
  local key val
  for kv in "gitVersion=$KUBERNETES_VERSION" "gitMajor=$major" "gitMinor=$minor" \
    "gitCommit=$sum" "gitTreeState=clean" "buildDate=$date"; do
    key=${kv%%=*}
    val=${kv#*=}
    ldflags+=" -X 'k8s.io/component-base/version.$key=$val' -X 'k8s.io/client-go/pkg/version.$key=$val'"
  done
  for c in "${cmds[@]}"; do
    echo "== building $c"
    # `|| return`: a function run as an `if` condition has `set -e` off, and a binary that
    # failed to build (say, a full disk) must not get the component stamped as built.
    (cd "$w" && gobuild build -ldflags "$ldflags" -o "$bin/$c" "k8s.io/kubernetes/cmd/$c") || return 1
  done
}

build_etcd() {
  local w=$dir/src/etcd
  write_gomod "$w" vfxt-ingest.test/controlplane/etcd <<EOF
require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOF
  cat >"$w/main.go" <<'EOF'
// Command etcd is upstream etcd's own entry point, built from the module
// (etcd's repo-local replaces rule out `go install ...@version`).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
  (cd "$w" && gobuild mod tidy && gobuild build -ldflags "-s -w" -o "$bin/etcd" .)
}

build_helm() {
  local w=$dir/src/helm
  write_gomod "$w" vfxt-ingest.test/controlplane/helm <<EOF
require helm.sh/helm/v3 $HELM_VERSION
EOF
  cat >"$w/tools.go" <<'EOF'
//go:build tools

// Package tools pins helm's command, so go mod tidy keeps it.
package tools

import _ "helm.sh/helm/v3/cmd/helm"
EOF
  (cd "$w" && gobuild mod tidy &&
    gobuild build -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
      -o "$bin/helm" helm.sh/helm/v3/cmd/helm)
}

# Whether every binary a component makes is in the bin dir (a stamp alone could outlive them).
outputs_present() {
  local outs
  case $1 in
  kube) outs=("${KUBE_CMDS[@]}") ;;
  *) outs=("$1") ;;
  esac
  local o
  for o in "${outs[@]}"; do
    [[ -x $bin/$o ]] || return 1
  done
}

# Runs one component's build unless its stamp says it is already built for
# this pin-id. Output goes to the console and to logs/<name>.log.
component() {
  local name=$1
  if [[ -f $dir/.built-$name ]] && outputs_present "$name"; then
    echo "== $name: cached"
    return 0
  fi
  local t0 t1
  t0=$(date +%s)
  echo "== $name: building (log: $dir/logs/$name.log)"
  if "build_$name" >"$dir/logs/$name.log" 2>&1; then
    t1=$(date +%s)
    echo "$((t1 - t0))" >"$dir/.built-$name"
    echo "== $name: built in $((t1 - t0))s"
    built_any=1
  else
    echo "== $name: FAILED; last lines of $dir/logs/$name.log:" >&2
    tail -n 30 "$dir/logs/$name.log" >&2
    failed+=("$name")
  fi
}

component kube
component etcd
component helm

end=$(date +%s.%N)
elapsed=$(awk -v a="$start" -v b="$end" 'BEGIN{printf "%.1f", b-a}')
if [[ $built_any == 1 && ${#failed[@]} == 0 && ! -f $dir/cold-seconds ]]; then
  echo "$elapsed" >"$dir/cold-seconds"
fi
echo
echo "pin-id:      $(basename "$dir")"
echo "bin dir:     $bin"
for f in "$dir"/.built-*; do
  [[ -f $f ]] && echo "  ${f##*/.built-}: built in $(cat "$f")s"
done
echo "cold build:  $(cat "$dir/cold-seconds" 2>/dev/null || echo unknown)s (recorded when this pin-id was first built)"
echo "this run:    ${elapsed}s ($([[ $built_any == 1 ]] && echo built || echo warm, no-op))"
if ((${#failed[@]})); then
  echo "FAILED components: ${failed[*]} (logs in $dir/logs)" >&2
  exit 1
fi

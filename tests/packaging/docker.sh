#!/usr/bin/env bash
# Builds the vfxt-ingest image with a local Docker engine and no registry, then runs it:
#   1. installs Debian's docker.io when dockerd is missing, starts dockerd when it is not running;
#   2. makes a runtime base image FROM scratch holding only the shared libraries the binary links
#      (glibc, libgcc_s) and a passwd/group naming uid 65532 "nonroot" (what distroless/cc provides);
#   3. wraps a binary built on this host in a one-file image and builds the real Dockerfile with
#      RUNTIME_IMAGE and BINARY_IMAGE pointing at those local images (the standard multi-stage build
#      is the default for users; here the cargo build runs on the host, where its cache is);
#   4. runs the image: `--version`, the OCI labels and user, `copy` of a small tree as the non-root user
#      (read-only root fs, no capabilities) and as root with the copy pods' capabilities (owners kept),
#      and `operator` without a cluster (exit 2, a clear message).
# Usage: tests/packaging/docker.sh [--profile release|debug]   (default release)
# Prints the time of each step and the total. Caches under ${VFXT_CACHE:-$HOME/.cache/vfxt-ingest}/docker.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
profile=release
while [[ $# -gt 0 ]]; do
    case $1 in
        --profile) profile=$2; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "docker.sh: unknown argument $1 (valid: --profile release|debug)" >&2; exit 2 ;;
    esac
done
cache=${VFXT_CACHE:-$HOME/.cache/vfxt-ingest}/docker
mkdir -p "$cache"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)
image=vfxt-ingest:$version
# The Debian client (20.10) builds with BuildKit without the buildx plugin; BuildKit skips the unused
# `build` stage when BINARY_IMAGE is given.
docker=/usr/bin/docker
t0=$(date +%s.%N)
step() { printf '[docker.sh] %-46s %6.1f s\n' "$1" "$(echo "$(date +%s.%N) - ${2:-$t0}" | bc)"; }

# 1. engine
if ! command -v dockerd >/dev/null || [[ ! -x $docker ]]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >/dev/null
fi
command -v bc >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bc >/dev/null; }
if ! $docker info >/dev/null 2>&1; then
    # overlay2 needs a filesystem that supports it; vfs works everywhere (slower, fine for one small image).
    driver=overlay2
    for attempt in overlay2 vfs; do
        driver=$attempt
        setsid nohup dockerd --storage-driver="$driver" --data-root="$cache/data-$driver" \
            >"$cache/dockerd.log" 2>&1 </dev/null &
        for _ in $(seq 1 60); do
            $docker info >/dev/null 2>&1 && break 2
            kill -0 $! 2>/dev/null || break
            sleep 0.5
        done
        kill $! 2>/dev/null || true
        wait $! 2>/dev/null || true
    done
    $docker info >/dev/null 2>&1 || { echo "docker.sh: dockerd did not start; log:" >&2; tail -20 "$cache/dockerd.log" >&2; exit 1; }
    echo "[docker.sh] started dockerd (storage driver $driver, log $cache/dockerd.log)"
fi
step "engine ready"

# 2. the binary
t=$(date +%s.%N)
if [[ $profile == release ]]; then
    (cd "$repo" && nice -n 10 cargo build -q --release -p vfxt-ingest)
else
    (cd "$repo" && nice -n 10 cargo build -q -p vfxt-ingest)
fi
bin=${CARGO_TARGET_DIR:-$repo/target}/$profile/vfxt-ingest
step "cargo build --$profile (cached when fresh)" "$t"

# 3. local base images
t=$(date +%s.%N)
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/runtime/etc" "$ctx/runtime/tmp" "$ctx/bin"
# Every library the binary needs, at the path the dynamic loader looks for it.
for lib in $(ldd "$bin" | awk '/=>/ {print $3} /^\t\// {print $1}'); do
    mkdir -p "$ctx/runtime/$(dirname "$lib")"
    cp -L "$lib" "$ctx/runtime/$lib"
done
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$ctx/runtime/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$ctx/runtime/etc/group"
chmod 1777 "$ctx/runtime/tmp"
printf 'FROM scratch\nCOPY runtime/ /\n' >"$ctx/Dockerfile.runtime"
$docker build -q -t vfxt-ingest-local/runtime:cc -f "$ctx/Dockerfile.runtime" "$ctx" >/dev/null
cp "$bin" "$ctx/bin/vfxt-ingest"
# As the Dockerfile's build stage does: drop the line tables, keep the symbols.
strip --strip-debug "$ctx/bin/vfxt-ingest"
printf 'FROM scratch\nCOPY bin/vfxt-ingest /vfxt-ingest\n' >"$ctx/Dockerfile.binary"
$docker build -q -t vfxt-ingest-local/binary:"$profile" -f "$ctx/Dockerfile.binary" "$ctx" >/dev/null
step "local base images (scratch + libs, binary)" "$t"

# 4. the real Dockerfile. The context is an empty dir: with BINARY_IMAGE set, nothing is copied from it.
t=$(date +%s.%N)
mkdir -p "$ctx/empty"
DOCKER_BUILDKIT=1 $docker build -q -t "$image" -f "$repo/Dockerfile" \
    --build-arg RUNTIME_IMAGE=vfxt-ingest-local/runtime:cc \
    --build-arg BINARY_IMAGE=vfxt-ingest-local/binary:"$profile" \
    --build-arg VERSION="$version" \
    --build-arg REVISION="$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)" \
    --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "$ctx/empty" >/dev/null
size=$($docker image inspect -f '{{.Size}}' "$image")
step "docker build $image ($((size / 1024 / 1024)) MiB)" "$t"

# 5. run it
t=$(date +%s.%N)
fail() { echo "docker.sh: FAIL: $*" >&2; exit 1; }
out=$($docker run --rm "$image" --version)
[[ $out == "vfxt-ingest $version" ]] || fail "--version printed '$out', expected 'vfxt-ingest $version'"
user=$($docker image inspect -f '{{.Config.User}}' "$image")
[[ $user == 65532:65532 ]] || fail "image user is '$user', expected 65532:65532"
label=$($docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.version"}}' "$image")
[[ $label == "$version" ]] || fail "OCI version label is '$label'"
work=$(mktemp -d)
trap 'rm -rf "$ctx"; rm -rf "$work"' EXIT
mkdir -p "$work/src/a/b" "$work/dst"
for i in $(seq 1 50); do echo "file $i" >"$work/src/a/f$i"; done
head -c 3000000 /dev/urandom >"$work/src/a/b/big"
ln -s f1 "$work/src/a/link"
chown -R 65532:65532 "$work/dst"
# Read-only root filesystem and no capabilities, as in the chart's pod securityContext.
$docker run --rm --read-only --cap-drop ALL --security-opt no-new-privileges \
    -v "$work/src:/src:ro" -v "$work/dst:/dst" "$image" copy -q --threads 4 /src /dst \
    || fail "copy exited $?"
diff -r "$work/src" "$work/dst" >/dev/null || fail "copied tree differs from the source"
owner=$(stat -c %u "$work/dst/a/f1")
[[ $owner == 65532 ]] || fail "copied files belong to uid $owner, expected the non-root 65532"
# As root with the capabilities the operator gives copy pods that preserve owners (all within Pod
# Security's baseline): owners are kept, and a directory and a file closed to everyone are still read.
mkdir -p "$work/src/a/closed" && echo secret >"$work/src/a/closed/f" && chmod 000 "$work/src/a/closed/f" "$work/src/a/closed"
chown -R 1234:1234 "$work/src/a"
mkdir -p "$work/dst-root"
$docker run --rm --read-only --user 0:0 --cap-drop ALL \
    --cap-add CHOWN --cap-add DAC_OVERRIDE --cap-add FOWNER --cap-add FSETID \
    -v "$work/src:/src:ro" -v "$work/dst-root:/dst" "$image" copy -q --threads 4 /src /dst >/dev/null \
    || fail "copy as root exited $?"
owner=$(stat -c %u:%g "$work/dst-root/a/f1")
[[ $owner == 1234:1234 ]] || fail "as root, copied files belong to $owner, expected the source's 1234:1234"
[[ $(cat "$work/dst-root/a/closed/f" 2>/dev/null) == secret ]] || fail "as root without DAC_READ_SEARCH, a mode-000 file was not copied"
# The operator role starts and says clearly that there is no cluster to talk to.
set +e
msg=$($docker run --rm "$image" operator --image x --claims-url http://vfxt-ingest-claims.x.svc:8080 2>&1)
rc=$?
set -e
[[ $rc == 2 ]] || fail "operator without a cluster exited $rc (expected 2): $msg"
step "run: --version, labels, user, copy as 65532 and as root, operator" "$t"
step "total"
echo "[docker.sh] ok: $image"

# Shared by build.sh and up.sh: where the pinned binaries live.
# shellcheck shell=bash

cp_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# The cache directory for the current pins: hashing pins.env and build.sh means
# a change to either (a new version, a new build flag) gets a fresh directory.
cp_pin_dir() {
  local root=${VFXT_CACHE:-$HOME/.cache/vfxt-ingest}/controlplane id
  id=$(cat "$cp_here/pins.env" "$cp_here/build.sh" | sha256sum | cut -c1-16)
  echo "$root/$id"
}

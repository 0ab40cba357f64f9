#!/bin/sh
# share-mount.sh DIR: make DIR a mount point of its own with shared
# propagation (creating it if need be), as `ip netns add` does for
# /run/netns. A container that binds DIR with `rshared` can then mount on
# it, and the host sees that mount: the nic service's namespaces in
# /run/netns, its size-limited tmpfs on the run directory (docker/nic.sh).
# Docker refuses an rshared bind of a path on a mount that is not shared.
# Idempotent. Used by setup-host.sh and the compose end-to-end tests.
set -eu
[ $# -eq 1 ] || {
    echo "usage: share-mount.sh DIR" >&2
    exit 2
}
mkdir -p "$1"
mountpoint -q "$1" || mount --bind "$1" "$1"
mount --make-shared "$1"

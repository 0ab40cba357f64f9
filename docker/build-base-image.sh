#!/bin/sh
# Build a local Debian base image for the Dockerfile's BASE_IMAGE, for hosts
# that cannot pull python:3.12-slim (air-gapped, or no registry access).
#
#   docker/build-base-image.sh [--force] [TAG]      (default TAG vfstack-base:local)
#
# debootstrap makes a minimal Debian root file system with python3 and
# venv; `docker import` turns it into an image. The host's CA bundle is
# copied in and pip is told to use it, so `pip install` inside image builds
# trusts the same certificates the host does (a TLS-inspecting proxy's CA
# included). Skips the build when TAG exists, unless --force.
#
# Environment: SUITE (default stable), MIRROR (default http://deb.debian.org/debian),
# CA_BUNDLE (default /etc/ssl/certs/ca-certificates.crt). Needs root and debootstrap.
set -eu

force=0
if [ "${1:-}" = "--force" ]; then
    force=1
    shift
fi
tag="${1:-vfstack-base:local}"
suite="${SUITE:-stable}"
mirror="${MIRROR:-http://deb.debian.org/debian}"
ca_bundle="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

if [ "$force" -eq 0 ] && docker image inspect "$tag" >/dev/null 2>&1; then
    echo "base image $tag: exists (--force rebuilds it)"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "build-base-image: debootstrap needs root" >&2
    exit 1
fi
command -v debootstrap >/dev/null || {
    echo "build-base-image: debootstrap is missing (apt-get install debootstrap)" >&2
    exit 1
}
[ -r "$ca_bundle" ] || {
    echo "build-base-image: no CA bundle at $ca_bundle" >&2
    exit 1
}

# Under /var/tmp, not /tmp: a root file system of ~150 MB should not land
# in a RAM-backed /tmp.
work="$(mktemp -d /var/tmp/vfstack-base.XXXXXX)"
trap 'rm -rf "$work"' EXIT INT TERM
rootfs="$work/rootfs"

started=$(date +%s)
echo "base image $tag: debootstrap $suite from $mirror"
# minbase: only Essential packages and apt; python3-venv brings ensurepip's
# bundled pip wheel, so builds make a venv and need no Debian pip.
debootstrap --variant=minbase --include=python3,python3-venv \
    "$suite" "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log" >&2
    exit 1
}

mkdir -p "$rootfs/etc/ssl/certs"
cp "$ca_bundle" "$rootfs/etc/ssl/certs/ca-certificates.crt"
# pip ships its own CA list (certifi) and ignores the system one unless told.
cat >"$rootfs/etc/pip.conf" <<'EOF'
[global]
cert = /etc/ssl/certs/ca-certificates.crt
disable-pip-version-check = true
EOF
# Slim the image: package caches and lists are rebuilt by `apt-get update`.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* \
    "$rootfs"/var/log/*.log "$rootfs"/var/cache/debconf/*-old

tar -C "$rootfs" --numeric-owner -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'CMD ["python3"]' \
    --message "vfstack base: debootstrap $suite, python3, host CA bundle" \
    - "$tag" >/dev/null
echo "base image $tag: built in $(($(date +%s) - started)) s," \
    "$(docker image inspect -f '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}')"

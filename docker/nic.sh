#!/bin/sh
# The compose `nic` service: make the VFs the stack services use, hold them
# for the project's lifetime, and take them away on `docker compose down`.
#
# It keeps running (instead of exiting after the setup) so that compose
# stops it last, after every stack (they depend on it), and its SIGTERM
# is the moment to remove what it made: a plain `docker compose down`
# leaves no interface or namespace behind.
#
# VFSTACK_MODE   emulated (default): `vfstack emulate up`, namespace
#                vfstack-peer with the kernel peer, PF $PF, VFs ${PF}v0..
#                sriov | vmdq: `vfstack vf setup --mode sriov|vmdq` on the
#                real port $PF (extra flags, e.g. --mac-base, --vlan, in
#                $VF_SETUP_ARGS); the VFs stay configured on down, as
#                hardware settings usually are.
# PF             the PF (emulated default vfpf0)
# NUM_VFS        how many VFs (default 2)
# RUN_DIR_SIZE   size of the tmpfs mounted on the run directory (default 16m)
#
# The run directory (/run/vfstack here, VFSTACK_RUN_DIR on the host, bound
# with shared propagation) becomes a tmpfs of its own, limited in size: the
# stacks' sockets and counters live there, and nothing in it can fill the
# host's /run, nor the other way round. It is unmounted on down in emulated
# mode; with real VFs it stays, since it holds `vf setup`'s journal.
set -eu

mode="${VFSTACK_MODE:-emulated}"
num="${NUM_VFS:-2}"
ready=/tmp/vfstack-nic.ready # the healthcheck looks for it

run_dir=/run/vfstack

up() {
    # Not `mountpoint`: the bind from the host already makes the directory
    # a mount point, and the tmpfs would never be mounted. Ours has its name.
    if ! findmnt -n -o SOURCE -M "$run_dir" | grep -qx vfstack-run; then
        mount -t tmpfs -o "size=${RUN_DIR_SIZE:-16m},mode=0755,nosuid,nodev,noexec" \
            vfstack-run "$run_dir"
    fi
    case "$mode" in
    emulated)
        vfstack emulate up --vfs "$num" --pf "${PF:-vfpf0}"
        ;;
    sriov | vmdq)
        [ -n "${PF:-}" ] || {
            echo "nic: set PF (the physical port) in .env for mode $mode" >&2
            return 1
        }
        # shellcheck disable=SC2086  # VF_SETUP_ARGS is a list of flags
        vfstack vf setup --pf "$PF" --num "$num" --mode "$mode" ${VF_SETUP_ARGS:-}
        ;;
    *)
        echo "nic: VFSTACK_MODE must be emulated, sriov or vmdq, not '$mode'" >&2
        return 1
        ;;
    esac
}

down() {
    rm -f "$ready"
    case "$mode" in
    emulated)
        vfstack emulate down --pf "${PF:-vfpf0}"
        umount "$run_dir" || true # the stacks and apps are gone: compose stops nic last
        ;;
    *) echo "nic: $mode: the VFs on $PF stay configured; undo with: vfstack vf restore --pf $PF" ;;
    esac
}

if ! up; then
    down || true # a half-made port would outlive the failed container
    exit 1
fi
trap 'down; exit 0' TERM INT
touch "$ready"
echo "nic: $mode port ready; removed when this service stops"
# A background sleep and `wait`: the shell runs the trap as soon as the
# signal arrives instead of after the sleep.
while :; do
    sleep 3600 &
    wait $! || true
done

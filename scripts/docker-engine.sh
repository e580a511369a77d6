#!/usr/bin/env bash
# A private, throw-away Docker engine for Miasma's tests and `make run`.
#
#   docker-engine.sh start DIR               start dockerd (+ containerd) under DIR;
#                                             prints its DOCKER_HOST as the last stdout line
#   docker-engine.sh stop DIR                stop the engine started under DIR (idempotent)
#   docker-engine.sh image DOCKER_HOST [TAG] build the busybox test image (no registry needed)
#
# Everything the engine owns lives under DIR: docker.sock, dockerd.pid, dockerd.log, data/
# (images, containers), exec/ (runtime state), containerd/ (its own containerd: socket,
# state, root, log). Only loopback is needed: no image is ever pulled.
#
# Host footprint, kept as small as possible so the engine can sit next to a system Docker:
#   * its own bridge "miasma<8 hex of DIR>" (10.213.N.1/24, the first free N) instead of
#     docker0; `stop` deletes it;
#   * no iptables rules, no ip_forward change (--iptables=false --ip-forward=false): published
#     ports are served by docker-proxy (the userland proxy) and containers reach each other
#     over the bridge, which is all the tests need (no outbound traffic, no registry);
#   * containerd's shims still put their sockets in /run/containerd/s (hard-coded in 1.6,
#     names are hashed, so unique; runc state goes to DIR/exec/runtime-runc) and dockerd
#     creates an empty /run/docker/plugins.
#
# Environment knobs: MIASMA_ENGINE_STORAGE_DRIVER (default: overlay2 if an overlay mount
# works under DIR, else vfs), MIASMA_ENGINE_START_TIMEOUT (s, default 60),
# MIASMA_ENGINE_EXTRA_FLAGS (extra dockerd flags, word-split).
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

readonly DEFAULT_TAG="miasma-test/busybox:latest"
readonly SUBNET_PREFIX="10.213"
START_TIMEOUT="${MIASMA_ENGINE_START_TIMEOUT:-60}"
readonly STOP_TIMEOUT=30

log() { printf 'docker-engine: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

usage() {
    sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# --- packages ---------------------------------------------------------------------------

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "cannot install $*: apt-get not found"
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        as_root apt-get update >&2
        APT_UPDATED=1
    fi
    log "apt-get install -y $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >&2
}

have_engine_binaries() {
    local bin
    for bin in dockerd docker containerd containerd-shim-runc-v2 runc docker-proxy; do
        command -v "$bin" >/dev/null 2>&1 || return 1
    done
}

# Installs, in one apt-get run, what is missing: for "engine" the engine and the test
# image's busybox (so CI pays for one apt-get run), for "image" the docker CLI and busybox.
ensure_packages() {
    local -a missing=()
    if [ "$1" = engine ]; then
        have_engine_binaries || missing+=(docker.io)
        command -v ip >/dev/null 2>&1 || missing+=(iproute2)
    else
        command -v docker >/dev/null 2>&1 || missing+=(docker.io)
    fi
    static_busybox >/dev/null || missing+=(busybox-static)
    if [ "${#missing[@]}" -gt 0 ]; then
        apt_install "${missing[@]}"
    fi
    if [ "$1" = engine ]; then
        have_engine_binaries || die "dockerd/containerd/runc/docker-proxy still missing after install"
    fi
    command -v docker >/dev/null 2>&1 || die "no docker CLI after installing docker.io"
    static_busybox >/dev/null || die "no static busybox after installing busybox-static"
}

# --- helpers ----------------------------------------------------------------------------

abs_dir() {
    [ -n "$1" ] || die "DIR is empty"
    mkdir -p "$1"
    (cd "$1" && pwd -P)
}

engine_answers() {
    command -v docker >/dev/null 2>&1 || return 1
    timeout 15 docker -H "$1" info >/dev/null 2>&1
}

# shellcheck source=scripts/process.sh
source "$(dirname "${BASH_SOURCE[0]}")/process.sh"

# Sends SIGTERM, waits up to TIMEOUT seconds, then SIGKILLs. Returns when PID is gone.
terminate() {
    local pid="$1" what="$2" timeout="$3" i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < timeout * 10; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    log "$what ($pid) still alive after ${timeout}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
}

bridge_name() {
    local hash
    hash="$(printf '%s' "$1" | sha256sum | cut -c1-8)"
    printf 'miasma%s\n' "$hash"
}

# The address pool the engine's own networks (one per Miasma instance) come from:
# 10.X.0.0/16 with X in 64..191 from the DIR's hash, so engines side by side (and a
# system Docker on 172.17+/192.168) do not compete for the default pools.
address_pool() {
    local hash
    hash="$(printf '%s' "$1" | sha256sum | cut -c1-2)"
    printf '10.%d.0.0/16\n' $((64 + 0x$hash % 128))
}

# Creates (or reuses) this engine's bridge and prints its name.
ensure_bridge() {
    local dir="$1" name n used
    name="$(bridge_name "$dir")"
    if ! ip link show dev "$name" >/dev/null 2>&1; then
        used="$(ip -o -4 addr show; ip -4 route show)"
        for ((n = 0; n < 256; n++)); do
            if ! grep -qE "(^|[^0-9.])${SUBNET_PREFIX//./[.]}[.]${n}[.]" <<<"$used"; then
                break
            fi
        done
        [ "$n" -lt 256 ] || die "no free $SUBNET_PREFIX.N.0/24 subnet for the bridge"
        ip link add name "$name" type bridge
        ip addr add "$SUBNET_PREFIX.$n.1/24" dev "$name"
        log "created bridge $name ($SUBNET_PREFIX.$n.1/24)"
    fi
    ip link set dev "$name" up
    printf '%s\n' "$name"
}

# overlay2 needs a working overlay mount on the data root's filesystem (not the case on
# overlayfs itself or on some tmpfs/xfs); vfs always works (full copies, slower).
pick_storage_driver() {
    local dir="$1" probe ok=1
    if [ -n "${MIASMA_ENGINE_STORAGE_DRIVER:-}" ]; then
        printf '%s\n' "$MIASMA_ENGINE_STORAGE_DRIVER"
        return
    fi
    # Keep whatever an earlier run of this DIR used (its images are stored that way).
    if [ -d "$dir/data/overlay2" ]; then
        echo overlay2
        return
    elif [ -d "$dir/data/vfs" ]; then
        echo vfs
        return
    fi
    mkdir -p "$dir/data"
    probe="$(mktemp -d "$dir/data/.overlay-probe.XXXXXX")"
    mkdir "$probe/lower" "$probe/upper" "$probe/work" "$probe/merged"
    echo ok >"$probe/lower/f"
    if mount -t overlay overlay \
        -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" \
        "$probe/merged" 2>/dev/null; then
        if [ "$(cat "$probe/merged/f" 2>/dev/null)" = ok ] && echo x >"$probe/merged/g"; then
            ok=0
        fi
        umount "$probe/merged" || true
    fi
    rm -rf "$probe"
    if [ "$ok" -eq 0 ]; then echo overlay2; else echo vfs; fi
}

start_containerd() {
    local dir="$1" cdir="$1/containerd" pid i
    pid="$(read_pid "$cdir/containerd.pid")"
    if [ -n "$pid" ] && pid_is "$pid" containerd "$cdir/"; then
        log "reusing containerd $pid"
        return 0
    fi
    mkdir -p "$cdir/root" "$cdir/state" "$cdir/opt"
    rm -f "$cdir/containerd.sock" "$cdir/containerd.sock.ttrpc"
    # Our own config: nothing from /etc/containerd, nothing under /run/containerd or
    # /var/lib/containerd except what containerd 1.6 hard-codes for shims.
    cat >"$cdir/config.toml" <<EOF
version = 2
root = "$cdir/root"
state = "$cdir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$cdir/containerd.sock"

[ttrpc]
  address = "$cdir/containerd.sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$cdir/opt"
EOF
    setsid containerd --config "$cdir/config.toml" </dev/null >>"$cdir/containerd.log" 2>&1 9>&- &
    pid=$!
    echo "$pid" >"$cdir/containerd.pid"
    for ((i = 0; i < 200; i++)); do
        [ -S "$cdir/containerd.sock" ] && return 0
        alive "$pid" || break
        sleep 0.1
    done
    tail -n 30 "$cdir/containerd.log" >&2 || true
    kill -TERM "$pid" 2>/dev/null || true
    die "containerd did not come up (log: $cdir/containerd.log)"
}

# Starts dockerd in the background; prints its PID.
launch_dockerd() {
    local dir="$1" driver="$2" bridge="$3"
    local -a flags=(
        --config-file "$dir/daemon.json"
        --host "unix://$dir/docker.sock"
        --data-root "$dir/data"
        --exec-root "$dir/exec"
        --pidfile "$dir/dockerd.pid"
        --containerd "$dir/containerd/containerd.sock"
        --storage-driver "$driver"
        --bridge "$bridge"
        --iptables=false
        --ip-forward=false
        --ip-masq=false
        --userland-proxy=true
        --default-address-pool "base=$(address_pool "$dir"),size=24"
    )
    # Newer engines default --ip6tables to true; 20.10 has it as an (off) experimental flag.
    if dockerd --help 2>&1 | grep -q -- '--ip6tables'; then
        flags+=(--ip6tables=false)
    fi
    if [ -n "${MIASMA_ENGINE_EXTRA_FLAGS:-}" ]; then
        # shellcheck disable=SC2206 # word splitting is the point
        flags+=(${MIASMA_ENGINE_EXTRA_FLAGS})
    fi
    log "dockerd ${flags[*]}"
    {
        printf '\n=== %s: dockerd %s\n' "$(date -Is)" "${flags[*]}"
    } >>"$dir/dockerd.log"
    # No registry is reachable: in swarm mode, start tasks from local images without
    # first trying (and waiting for) a pull.
    DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 \
        setsid dockerd "${flags[@]}" </dev/null >>"$dir/dockerd.log" 2>&1 9>&- &
    echo $!
}

# Prints what the last dockerd launched under DIR logged (after its "===" header).
last_run_log() {
    awk '/^=== / { n = 0; next } { lines[++n] = $0 } END { for (i = 1; i <= n; i++) print lines[i] }' \
        "$1/dockerd.log" 2>/dev/null || true
}

# Waits for the socket; returns 0 when it answers, 1 when dockerd died, 2 on timeout.
wait_for_engine() {
    local host="$1" pid="$2" deadline
    deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if engine_answers "$host"; then return 0; fi
        if ! alive "$pid"; then
            # It may have just exited after another instance took over; one last look.
            engine_answers "$host" && return 0
            return 1
        fi
        sleep 0.5
    done
    return 2
}

# --- subcommands ------------------------------------------------------------------------

cmd_start() {
    [ $# -eq 1 ] || usage
    local dir host pid driver bridge rc started
    dir="$(abs_dir "$1")"
    host="unix://$dir/docker.sock"
    if engine_answers "$host"; then
        log "engine already answers at $host"
        printf '%s\n' "$host"
        return 0
    fi
    is_root || die "starting dockerd needs root"
    # unix socket paths are limited to 108 bytes.
    [ "${#dir}" -le 80 ] || die "DIR is too long for unix sockets (${#dir} > 80 chars): $dir"

    exec 9>"$dir/engine.lock"
    flock -w 120 9 || die "timed out waiting for $dir/engine.lock"
    if engine_answers "$host"; then
        printf '%s\n' "$host"
        return 0
    fi
    ensure_packages engine
    started="$(date +%s.%N)"

    pid="$(read_pid "$dir/dockerd.pid")"
    if [ -n "$pid" ] && pid_is "$pid" dockerd "$dir/docker.sock"; then
        log "dockerd $pid is already running for $dir; waiting for it"
    else
        # A pidfile naming a dead (or zombie) dockerd makes the new one refuse to start.
        rm -f "$dir/dockerd.pid"
        [ -f "$dir/daemon.json" ] || echo '{}' >"$dir/daemon.json"
        start_containerd "$dir"
        bridge="$(ensure_bridge "$dir")"
        driver="$(pick_storage_driver "$dir")"
        log "storage driver: $driver"
        pid="$(launch_dockerd "$dir" "$driver" "$bridge")"
    fi

    rc=0
    wait_for_engine "$host" "$pid" || rc=$?
    if [ "$rc" -eq 1 ] && [ "${driver:-}" = overlay2 ] && [ -z "${MIASMA_ENGINE_STORAGE_DRIVER:-}" ] &&
        last_run_log "$dir" | grep -qiE 'graphdriver|driver not supported'; then
        log "dockerd failed with overlay2; retrying with vfs"
        pid="$(launch_dockerd "$dir" vfs "$bridge")"
        rc=0
        wait_for_engine "$host" "$pid" || rc=$?
    fi
    if [ "$rc" -ne 0 ]; then
        if [ "$rc" -eq 2 ]; then
            log "dockerd did not answer within ${START_TIMEOUT}s"
        else
            log "dockerd exited"
        fi
        log "last lines of $dir/dockerd.log:"
        last_run_log "$dir" | tail -n 40 >&2
        stop_engine "$dir"
        exit 1
    fi
    log "engine up at $host after $(awk -v s="$started" -v e="$(date +%s.%N)" \
        'BEGIN { printf "%.1f", e - s }')s (dockerd pid $pid)"
    printf '%s\n' "$host"
}

stop_engine() {
    local dir="$1" host pid ids cdir="$1/containerd" bridge networks=""
    host="unix://$dir/docker.sock"
    pid="$(read_pid "$dir/dockerd.pid")"
    if [ -n "$pid" ] && pid_is "$pid" dockerd "$dir/docker.sock"; then
        # Kill running containers first: dockerd would otherwise give each one its 10 s
        # stop timeout (busybox as PID 1 ignores SIGTERM).
        if ids="$(timeout 10 docker -H "$host" ps -q 2>/dev/null)" && [ -n "$ids" ]; then
            # shellcheck disable=SC2086 # one id per word
            timeout 20 docker -H "$host" kill $ids >/dev/null 2>&1 || true
        fi
        # dockerd leaves the bridges of its user networks (br-<id>) behind when it stops.
        networks="$(timeout 10 docker -H "$host" network ls -q --filter driver=bridge \
            2>/dev/null || true)"
        log "stopping dockerd $pid"
        terminate "$pid" dockerd "$STOP_TIMEOUT"
    fi
    pid="$(read_pid "$cdir/containerd.pid")"
    if [ -n "$pid" ] && pid_is "$pid" containerd "$cdir/"; then
        # If dockerd died or had to be SIGKILLed, its containers may still run and their
        # shims outlive containerd until their task is deleted: kill and delete them.
        if command -v ctr >/dev/null 2>&1; then
            for ids in $(timeout 10 ctr -a "$cdir/containerd.sock" -n moby tasks ls -q 2>/dev/null); do
                timeout 10 ctr -a "$cdir/containerd.sock" -n moby tasks delete --force \
                    "$ids" >/dev/null 2>&1 || true
            done
        fi
        log "stopping containerd $pid"
        terminate "$pid" containerd 10
    fi
    # A dockerd that died or was SIGKILLed leaves its mounts (data root, container rootfs,
    # netns) behind; they would make `rm -rf DIR` fail. Deepest first.
    local mnt other
    for other in $(pgrep -x dockerd || true); do
        if pid_is "$other" dockerd "$dir/"; then
            log "dockerd $other still uses $dir: leaving its mounts alone"
            return 0
        fi
    done
    while IFS= read -r mnt; do
        umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || log "could not unmount $mnt"
    done < <(awk -v d="$dir/" 'index($5, d) == 1 || $5 == substr(d, 1, length(d) - 1) { print $5 }' \
        /proc/self/mountinfo | sort -r)
    bridge="$(bridge_name "$dir")"
    if command -v ip >/dev/null 2>&1 && ip link show dev "$bridge" >/dev/null 2>&1; then
        ip link del dev "$bridge" 2>/dev/null || log "could not delete bridge $bridge"
    fi
    local network
    for network in $networks; do
        if command -v ip >/dev/null 2>&1 && ip link show dev "br-${network:0:12}" >/dev/null 2>&1; then
            ip link del dev "br-${network:0:12}" 2>/dev/null || true
        fi
    done
    rm -f "$dir/dockerd.pid" "$cdir/containerd.pid"
}

cmd_stop() {
    [ $# -eq 1 ] || usage
    local dir
    [ -d "$1" ] || return 0
    dir="$(cd "$1" && pwd -P)"
    exec 9>"$dir/engine.lock"
    flock -w 120 9 || die "timed out waiting for $dir/engine.lock"
    stop_engine "$dir"
}

cmd_image() {
    if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
    local host="$1" tag="${2:-$DEFAULT_TAG}" busybox root applet started
    if engine_answers "$host" && docker -H "$host" image inspect "$tag" >/dev/null 2>&1; then
        log "image $tag already present"
        printf '%s\n' "$tag"
        return 0
    fi
    ensure_packages image
    engine_answers "$host" || die "no Docker engine answers at $host"
    started="$(date +%s.%N)"
    busybox="$(static_busybox)"
    root="$(mktemp -d "${TMPDIR:-/tmp}/miasma-rootfs.XXXXXX")"
    # shellcheck disable=SC2064 # expand now: $root is local
    trap "rm -rf '$root'" EXIT

    mkdir -p "$root"/{bin,etc,root,www,tmp,usr,proc,sys,dev}
    chmod 1777 "$root/tmp"
    ln -s bin "$root/sbin"
    ln -s ../bin "$root/usr/bin"
    ln -s ../bin "$root/usr/sbin"
    cp "$busybox" "$root/bin/busybox"
    chmod 0755 "$root/bin/busybox"
    for applet in $("$root/bin/busybox" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
    done
    printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
        >"$root/etc/passwd"
    printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
    echo miasma-test >"$root/www/index.html"

    # The shell traps SIGTERM: as PID 1, a bare httpd would ignore it, and every stop and
    # every rollout of the app would wait out its 10 s grace period before the kill.
    tar --numeric-owner --owner=0 --group=0 -C "$root" -cf - . |
        docker -H "$host" import \
            --change 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' \
            --change 'CMD ["sh", "-c", "trap \"exit 0\" TERM INT; httpd -f -p ${PORT:-8080} -h /www & wait"]' \
            --message "Miasma test image: static busybox + /www/index.html" \
            - "$tag" >&2
    log "built $tag in $(awk -v s="$started" -v e="$(date +%s.%N)" \
        'BEGIN { printf "%.1f", e - s }')s"
    printf '%s\n' "$tag"
}

main() {
    [ $# -ge 1 ] || usage
    local sub="$1"
    shift
    case "$sub" in
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    image) cmd_image "$@" ;;
    -h | --help | help) usage ;;
    *) usage ;;
    esac
}

main "$@"

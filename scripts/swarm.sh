#!/usr/bin/env bash
# Docker Swarm for Miasma's tests: a single-node swarm on a (private) engine, and a worker
# engine in its own network namespace that joins it.
#
#   swarm.sh init DOCKER_HOST [ADVERTISE_ADDR]  make the engine a swarm manager (idempotent);
#                                                prints the swarm (cluster) ID as the last line
#   swarm.sh leave DOCKER_HOST                  leave the swarm (force) and remove what init made
#   swarm.sh worker-start DIR MANAGER_HOST      start a worker engine under DIR in a network
#                                                namespace and join it to MANAGER_HOST's swarm;
#                                                last stdout lines: NODE_ID=, DOCKER_HOST=, ADDRESS=
#   swarm.sh worker-stop DIR                    leave, stop the worker engine, delete its netns
#
# init advertises and listens on a loopback address only: ADVERTISE_ADDR, else the first of
# 127.0.0.1, 127.0.0.2, ... whose gossip port is free. The gossip port (7946) cannot be
# changed in any Docker release, so two swarm-mode engines in one network namespace need
# distinct addresses; a swarm-mode engine listening on 0.0.0.0 (Docker's default) blocks all
# of them. The data-path (VXLAN) port is the first free UDP port from 4789 + N - 1 for
# 127.0.0.N (the kernel refuses a second VXLAN device with the same VNI and port, and the
# ingress network of every swarm has VNI 4096: "error creating vxlan interface: file
# exists"). docker_gwbridge is created first with a bridge of our own ("miasmag<8 hex of
# DOCKER_HOST>", 10.215.N.1/24) so the engine never adopts (and renumbers) another engine's
# "docker_gwbridge"; leave removes it (stopping the engine without leaving does not).
# No iptables rule is ever added (the engine runs with --iptables=false): host-mode published
# ports work (docker-proxy), the ingress routing mesh does not (it needs iptables and IPVS).
#
# The worker: network namespace "miasmaw<8 hex of DIR>", veth "mwh<8 hex>" (host side,
# 10.214.N.1/24) / "mwn<8 hex>" (10.214.N.2, the worker's ADDRESS), a UTS namespace with
# hostname "miasma-w<8 hex>" (else both nodes are called like the machine), and the engine of
# scripts/docker-engine.sh started in it (its sockets are files under DIR, reachable from the
# host). A manager that advertises a loopback address is reached through two docker-proxy
# relays (worker netns 127.0.0.N:PORT -> 10.214.N.1:PORT -> host 127.0.0.N:PORT), so the
# worker sees the manager at the very address the manager advertises, and reconnects after a
# restart. Only the control plane is relayed: overlay networks do not span the two nodes.
# The test image is copied from the manager (docker save | docker load), or built if absent,
# and the node gets the label miasma-test=worker.
#
# Exit codes: 0 ok, 1 error, 2 usage, 3 (worker-start only) this machine cannot run the worker
# (kernel without network namespaces or veth, or no permission to create them); the reason is
# the last stderr line.
#
# Environment knobs: MIASMA_SWARM_PORT (manager listen port, default: first free from 2377),
# MIASMA_SWARM_DATA_PATH_PORT (default: first free UDP port from 4789 + N - 1),
# MIASMA_SWARM_TIMEOUT (s, default 60).
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
readonly HERE
readonly ENGINE_SCRIPT="$HERE/docker-engine.sh"
readonly TEST_IMAGE="miasma-test/busybox:latest"
readonly WORKER_LABEL="miasma-test=worker"
readonly VETH_PREFIX="10.214"
readonly GWBRIDGE_PREFIX="10.215"
readonly GOSSIP_PORT=7946
readonly WORKER_SWARM_PORT=2377
TIMEOUT="${MIASMA_SWARM_TIMEOUT:-60}"

log() { printf 'swarm: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}
# A limitation of this machine (kernel, privileges), not a bug: exit 3, reason last on stderr.
unsupported() {
    printf '%s\n' "$*" >&2
    exit 3
}

usage() {
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

hash8() { printf '%s' "$1" | sha256sum | cut -c1-8; }

need_docker() {
    command -v docker >/dev/null 2>&1 ||
        die "no docker CLI (scripts/docker-engine.sh start installs it)"
}

engine_answers() { timeout 15 docker -H "$1" info >/dev/null 2>&1; }

# "STATE CONTROL" of the engine's swarm membership, e.g. "inactive false", "active true".
swarm_state() {
    timeout 15 docker -H "$1" info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}'
}

cluster_id() { timeout 15 docker -H "$1" info --format '{{.Swarm.Cluster.ID}}'; }

# Local addresses listening on PROTO (tcp|udp) PORT in this network namespace, one per line.
listeners() {
    local flag=-Hltn
    [ "$1" = udp ] && flag=-Hlun
    ss "$flag" "sport = :$2" 2>/dev/null | awk '{ a = $4; sub(/:[0-9]+$/, "", a); print a }'
}

# True if nothing listens on ADDR:PORT (nor on the wildcard address) for PROTO.
port_free() {
    local proto="$1" addr="$2" port="$3" a
    while IFS= read -r a; do
        case "$a" in
        "$addr" | 0.0.0.0 | '*' | '[::]' | '[::ffff:0.0.0.0]') return 1 ;;
        esac
    done < <(listeners "$proto" "$port")
    return 0
}

# Prints the first port from START that is free for PROTO on ADDR.
first_free_port() {
    local proto="$1" addr="$2" port="$3" last=$(($3 + 100))
    for (( ; port < last; port++)); do
        if port_free "$proto" "$addr" "$port"; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    die "no free $proto port in $3-$((last - 1)) on $addr"
}

# Prints the first N such that PREFIX.N.0/24 appears on no address or route here.
free_subnet() {
    local prefix="$1" used n
    used="$(ip -o -4 addr show; ip -4 route show)"
    for ((n = 0; n < 256; n++)); do
        if ! grep -qE "(^|[^0-9.])${prefix//./[.]}[.]${n}[.]" <<<"$used"; then
            printf '%s\n' "$n"
            return 0
        fi
    done
    die "no free $prefix.N.0/24 subnet"
}

wait_until() {
    local what="$1" deadline=$((SECONDS + TIMEOUT))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || die "timed out after ${TIMEOUT}s waiting for $what"
        sleep 0.2
    done
}

# --- init / leave -----------------------------------------------------------------------

manager_ready() {
    [ "$(swarm_state "$1" 2>/dev/null)" = "active true" ] &&
        docker -H "$1" network inspect ingress >/dev/null 2>&1
}

# Creates docker_gwbridge with a bridge named after the engine, unless it exists already.
ensure_gwbridge() {
    local host="$1" bridge n
    if docker -H "$host" network inspect docker_gwbridge >/dev/null 2>&1; then
        return 0
    fi
    bridge="miasmag$(hash8 "$host")"
    n="$(free_subnet "$GWBRIDGE_PREFIX")"
    docker -H "$host" network create --driver bridge \
        --subnet "$GWBRIDGE_PREFIX.$n.0/24" --gateway "$GWBRIDGE_PREFIX.$n.1" \
        --opt com.docker.network.bridge.name="$bridge" \
        --opt com.docker.network.bridge.enable_icc=false \
        --opt com.docker.network.bridge.enable_ip_masquerade=true \
        docker_gwbridge >/dev/null
    log "created docker_gwbridge (bridge $bridge, $GWBRIDGE_PREFIX.$n.0/24)"
}

cmd_init() {
    if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
    local host="$1" addr="${2:-}" state port dport n started
    need_docker
    engine_answers "$host" || die "no Docker engine answers at $host"
    state="$(swarm_state "$host")"
    case "$state" in
    "active true")
        log "already a swarm manager"
        cluster_id "$host"
        return 0
        ;;
    "active false") die "the engine at $host is a swarm worker, not a manager" ;;
    inactive*) ;;
    *)
        die "the engine at $host is in swarm state '${state%% *}': $(docker -H "$host" info \
            --format '{{.Swarm.Error}}' 2>/dev/null); run: swarm.sh leave $host"
        ;;
    esac
    started="$(date +%s.%N)"

    if [ -z "$addr" ]; then
        for ((n = 1; n < 255; n++)); do
            if port_free tcp "127.0.0.$n" "$GOSSIP_PORT"; then
                addr="127.0.0.$n"
                break
            fi
        done
        [ -n "$addr" ] || die "port $GOSSIP_PORT (swarm gossip, fixed) is taken on every" \
            "loopback address (another swarm-mode engine listening on 0.0.0.0?)"
    elif ! port_free tcp "$addr" "$GOSSIP_PORT"; then
        die "port $GOSSIP_PORT (swarm gossip, fixed) is taken on $addr (another swarm-mode" \
            "engine?); the swarm would start without its network agent (no overlay DNS)"
    fi
    port="${MIASMA_SWARM_PORT:-$(first_free_port tcp "$addr" 2377)}"
    # The VXLAN socket only appears once a task needs an overlay network, so a free port now
    # may be another swarm's later: start from 4789 + (last octet - 1) for 127.0.0.N.
    dport=4789
    [[ "$addr" == 127.* ]] && dport=$((4789 + ${addr##*.} - 1))
    dport="${MIASMA_SWARM_DATA_PATH_PORT:-$(first_free_port udp 0.0.0.0 "$dport")}"

    ensure_gwbridge "$host"
    log "docker swarm init --advertise-addr $addr --listen-addr $addr:$port --data-path-port $dport"
    docker -H "$host" swarm init --advertise-addr "$addr" --listen-addr "$addr:$port" \
        --data-path-port "$dport" >/dev/null
    wait_until "the swarm manager at $host" manager_ready "$host"
    log "swarm initialised in $(elapsed "$started")s (manager $addr:$port, data path port $dport)"
    cluster_id "$host"
}

no_swarm_networks() {
    ! docker -H "$1" network inspect ingress >/dev/null 2>&1
}

cmd_leave() {
    [ $# -eq 1 ] || usage
    local host="$1" state bridge deadline
    need_docker
    if ! engine_answers "$host"; then
        # Gone already: only our docker_gwbridge can be left (dockerd never deletes it).
        bridge="miasmag$(hash8 "$host")"
        if ip link show dev "$bridge" >/dev/null 2>&1; then
            ip link del dev "$bridge" 2>/dev/null || log "could not delete bridge $bridge"
        fi
        log "no Docker engine answers at $host: nothing to leave"
        return 0
    fi
    state="$(swarm_state "$host")"
    if [ "${state%% *}" != inactive ]; then
        timeout 60 docker -H "$host" swarm leave --force >/dev/null
        log "left the swarm"
    fi
    # The ingress sandbox keeps an endpoint on docker_gwbridge for a moment after leaving.
    wait_until "the swarm networks of $host to go" no_swarm_networks "$host"
    bridge="$(docker -H "$host" network inspect docker_gwbridge \
        --format '{{index .Options "com.docker.network.bridge.name"}}' 2>/dev/null || true)"
    if [[ "$bridge" == miasmag* ]]; then
        deadline=$((SECONDS + 15))
        until docker -H "$host" network rm docker_gwbridge >/dev/null 2>&1; do
            if ((SECONDS >= deadline)); then
                log "could not remove docker_gwbridge ($bridge)"
                break
            fi
            sleep 0.3
        done
    fi
}

# --- worker -----------------------------------------------------------------------------

is_loopback() { [[ "$1" == 127.* ]]; }

# Sets the worker's names from DIR (absolute).
worker_names() {
    local h
    h="$(hash8 "$1")"
    NETNS="miasmaw$h"
    VETH_HOST="mwh$h"
    VETH_NS="mwn$h"
    NODE_HOSTNAME="miasma-w$h"
}

# Runs a command in the worker's network namespace only (not the mount namespace, unlike
# `ip netns exec`, whose fresh /sys hides the cgroup mounts: dockerd then fails with
# "Devices cgroup isn't mounted").
in_net() { nsenter --net="/run/netns/$NETNS" "$@"; }

netns_exists() { [ -e "/run/netns/$NETNS" ]; }

# Creates the netns and the veth pair; exits 3 if the kernel cannot.
setup_network() {
    local n="$1" err
    [ -e /proc/self/ns/net ] ||
        unsupported "kernel without network namespaces (no /proc/self/ns/net: CONFIG_NET_NS)"
    if ! netns_exists; then
        if ! err="$(ip netns add "$NETNS" 2>&1)"; then
            unsupported "cannot create a network namespace: ip netns add $NETNS: ${err//$'\n'/; }"
        fi
    fi
    if ! ip link show dev "$VETH_HOST" >/dev/null 2>&1; then
        if ! err="$(ip link add "$VETH_HOST" type veth peer name "$VETH_NS" netns "$NETNS" 2>&1)"; then
            ip netns del "$NETNS" 2>/dev/null || true
            err="${err//$'\n'/; }"
            if [[ "$err" == *"Unknown device type"* || "$err" == *"not supported"* ]]; then
                unsupported "kernel without veth (CONFIG_VETH): ip link add type veth: $err"
            fi
            unsupported "cannot create a veth pair: ip link add $VETH_HOST type veth: $err"
        fi
        ip addr add "$VETH_PREFIX.$n.1/24" dev "$VETH_HOST"
        ip -n "$NETNS" addr add "$VETH_PREFIX.$n.2/24" dev "$VETH_NS"
    fi
    ip link set dev "$VETH_HOST" up
    ip -n "$NETNS" link set dev lo up
    ip -n "$NETNS" link set dev "$VETH_NS" up
}

# Starts a docker-proxy relay LISTEN_ADDR:PORT -> TO_ADDR:PORT (in the worker netns if
# WHERE=ns); its pid goes to DIR/relay-WHERE.pid.
start_relay() {
    local dir="$1" where="$2" listen="$3" to="$4" port="$5" pid i
    local pidfile="$dir/relay-$where.pid" ready="$dir/relay-$where.ready"
    pid="$(read_pid "$pidfile")"
    if [ -n "$pid" ] && pid_is "$pid" docker-proxy "-host-ip $listen -host-port $port "; then
        return 0
    fi
    local -a cmd=(docker-proxy -proto tcp -host-ip "$listen" -host-port "$port"
        -container-ip "$to" -container-port "$port")
    [ "$where" = ns ] && cmd=(nsenter --net="/run/netns/$NETNS" "${cmd[@]}")
    rm -f "$ready"
    # docker-proxy reports on fd 3 ("0" or "1\n<error>") and closes it: fd 3 must be open,
    # or it closes its own listening socket.
    setsid "${cmd[@]}" </dev/null >>"$dir/relay.log" 2>&1 3>"$ready" 8>&- &
    pid=$!
    echo "$pid" >"$pidfile"
    for ((i = 0; i < 100; i++)); do
        [ -s "$ready" ] && break
        alive "$pid" || break
        sleep 0.05
    done
    if [ "$(head -n1 "$ready" 2>/dev/null)" != 0 ]; then
        die "relay $listen:$port -> $to:$port ($where) failed: $(tail -n +2 "$ready" 2>/dev/null)"
    fi
}

stop_relay() {
    local pidfile="$1/relay-$2.pid" pid
    pid="$(read_pid "$pidfile")"
    if [ -n "$pid" ] && pid_is "$pid" docker-proxy "-host-ip "; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            alive "$pid" || break
            sleep 0.1
        done
    fi
    rm -f "$pidfile" "$1/relay-$2.ready"
}

# shellcheck source=scripts/process.sh
source "$(dirname "${BASH_SOURCE[0]}")/process.sh"

node_ready() {
    [ "$(docker -H "$1" node inspect "$2" --format '{{.Status.State}}' 2>/dev/null)" = ready ]
}

# True if the engine at WORKER_HOST is an active worker of MANAGER_HOST's swarm.
# (A worker's `docker info` has no cluster ID: ask the manager about the worker's node.)
in_this_swarm() {
    local node_id
    [ "$(swarm_state "$1" 2>/dev/null)" = "active false" ] || return 1
    node_id="$(docker -H "$1" info --format '{{.Swarm.NodeID}}' 2>/dev/null)" || return 1
    [ -n "$node_id" ] && docker -H "$2" node inspect "$node_id" >/dev/null 2>&1
}

print_worker() {
    local whost="$1" address="$2" node_id
    node_id="$(docker -H "$whost" info --format '{{.Swarm.NodeID}}')"
    printf 'NODE_ID=%s\nDOCKER_HOST=%s\nADDRESS=%s\n' "$node_id" "$whost" "$address"
}

cmd_worker_start() {
    [ $# -eq 2 ] || usage
    local dir mhost="$2" whost mstate maddr mip mport token n address started join_addr
    [ "$(id -u)" -eq 0 ] || die "worker-start needs root"
    need_docker
    # The worker's netns has no route out: docker-engine.sh could not apt-get in there.
    for tool in ip ss nsenter unshare flock dockerd containerd containerd-shim-runc-v2 runc \
        docker-proxy; do
        command -v "$tool" >/dev/null 2>&1 ||
            die "$tool not found (scripts/docker-engine.sh start installs what the engine needs)"
    done
    [ -n "$1" ] || die "DIR is empty"
    mkdir -p "$1"
    dir="$(cd "$1" && pwd -P)"
    [ "${#dir}" -le 80 ] || die "DIR is too long for unix sockets (${#dir} > 80 chars): $dir"
    whost="unix://$dir/docker.sock"
    worker_names "$dir"

    engine_answers "$mhost" || die "no Docker engine answers at $mhost"
    mstate="$(swarm_state "$mhost")"
    [ "$mstate" = "active true" ] || die "the engine at $mhost is not a swarm manager ($mstate)"
    maddr="$(docker -H "$mhost" info --format '{{range .Swarm.RemoteManagers}}{{.Addr}} {{end}}')"
    maddr="${maddr%% *}"
    mip="${maddr%:*}"
    mport="${maddr##*:}"
    if [ -z "$mip" ] || [ -z "$mport" ]; then
        die "cannot read the manager's address from $mhost"
    fi

    exec 8>"$dir/worker.lock"
    flock -w 120 8 || die "timed out waiting for $dir/worker.lock"
    started="$(date +%s.%N)"

    # The subnet of an existing veth (an earlier worker-start), else the first free one.
    n="$(ip -o -4 addr show dev "$VETH_HOST" 2>/dev/null |
        sed -n "s|.* ${VETH_PREFIX//./[.]}[.]\([0-9]*\)[.]1/24 .*|\1|p" | head -n1 || true)"
    [ -n "$n" ] || n="$(free_subnet "$VETH_PREFIX")"
    address="$VETH_PREFIX.$n.2"
    printf 'MANAGER_HOST=%q\n' "$mhost" >"$dir/worker.env"

    setup_network "$n"
    if is_loopback "$mip"; then
        start_relay "$dir" host "$VETH_PREFIX.$n.1" "$mip" "$mport"
        start_relay "$dir" ns "$mip" "$VETH_PREFIX.$n.1" "$mport"
    fi
    join_addr="$mip:$mport"

    # Already running and in this swarm: nothing else to do.
    if engine_answers "$whost" && in_this_swarm "$whost" "$mhost"; then
        log "worker already in the swarm"
        print_worker "$whost" "$address"
        return 0
    fi

    if ! engine_answers "$whost"; then
        log "starting the worker engine in netns $NETNS (hostname $NODE_HOSTNAME)"
        # The swarm agent pulls every task's image before starting it (and logs the failure)
        # unless told to prefer the local copy.
        # shellcheck disable=SC2016 # expanded by sh -c
        if ! DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 unshare --uts sh -c \
            'printf %s "$1" >/proc/sys/kernel/hostname && shift && exec "$@"' sh "$NODE_HOSTNAME" \
            nsenter --net="/run/netns/$NETNS" bash "$ENGINE_SCRIPT" start "$dir" >/dev/null 8>&-; then
            die "the worker engine did not start (log: $dir/dockerd.log)"
        fi
    fi

    if ! docker -H "$whost" image inspect "$TEST_IMAGE" >/dev/null 2>&1; then
        if docker -H "$mhost" image inspect "$TEST_IMAGE" >/dev/null 2>&1; then
            docker -H "$mhost" save "$TEST_IMAGE" | docker -H "$whost" load >/dev/null
            log "copied $TEST_IMAGE from the manager"
        else
            bash "$ENGINE_SCRIPT" image "$whost" "$TEST_IMAGE" >/dev/null
        fi
    fi

    # A restarted worker rejoins by itself (its swarm state is in its data root).
    local deadline=$((SECONDS + 15)) state
    while state="$(swarm_state "$whost")" && [ "${state%% *}" = pending ] &&
        ((SECONDS < deadline)); do
        sleep 0.2
    done
    if in_this_swarm "$whost" "$mhost"; then
        log "worker rejoined the swarm"
        print_worker "$whost" "$address"
        return 0
    fi
    if [ "$state" != "inactive false" ]; then
        # In another swarm, or stuck: start over.
        log "worker engine in swarm state '$state': leaving"
        timeout 60 docker -H "$whost" swarm leave --force >/dev/null 2>&1 || true
    fi
    token="$(docker -H "$mhost" swarm join-token -q worker)"
    log "docker swarm join --advertise-addr $address --listen-addr $address:$WORKER_SWARM_PORT $join_addr"
    timeout "$TIMEOUT" docker -H "$whost" swarm join --token "$token" \
        --advertise-addr "$address" --listen-addr "$address:$WORKER_SWARM_PORT" \
        "$join_addr" >/dev/null
    local node_id
    node_id="$(docker -H "$whost" info --format '{{.Swarm.NodeID}}')"
    wait_until "node $node_id to be ready" node_ready "$mhost" "$node_id"
    docker -H "$mhost" node update --label-add "$WORKER_LABEL" "$node_id" >/dev/null
    log "worker $node_id ($NODE_HOSTNAME, $address) joined in $(elapsed "$started")s"
    print_worker "$whost" "$address"
}

cmd_worker_stop() {
    [ $# -eq 1 ] || usage
    local dir whost node_id mhost=""
    [ -d "$1" ] || return 0
    dir="$(cd "$1" && pwd -P)"
    whost="unix://$dir/docker.sock"
    worker_names "$dir"
    exec 8>"$dir/worker.lock"
    flock -w 120 8 || die "timed out waiting for $dir/worker.lock"
    if [ -r "$dir/worker.env" ]; then
        # shellcheck disable=SC1091 # written by worker-start
        mhost="$(. "$dir/worker.env" && printf '%s' "${MANAGER_HOST:-}")"
    fi

    if command -v docker >/dev/null 2>&1 && engine_answers "$whost"; then
        node_id="$(docker -H "$whost" info --format '{{.Swarm.NodeID}}' 2>/dev/null || true)"
        if [ "$(swarm_state "$whost" 2>/dev/null)" != "inactive false" ]; then
            timeout 60 docker -H "$whost" swarm leave --force >/dev/null 2>&1 || true
        fi
        # Forget the node on the manager, or it stays listed as Down.
        if [ -n "$node_id" ] && [ -n "$mhost" ] && engine_answers "$mhost"; then
            timeout 30 docker -H "$mhost" node rm --force "$node_id" >/dev/null 2>&1 || true
        fi
    fi
    if netns_exists; then
        in_net bash "$ENGINE_SCRIPT" stop "$dir" || log "stopping the worker engine failed"
    else
        bash "$ENGINE_SCRIPT" stop "$dir" || log "stopping the worker engine failed"
    fi
    stop_relay "$dir" ns
    stop_relay "$dir" host
    if ip link show dev "$VETH_HOST" >/dev/null 2>&1; then
        ip link del dev "$VETH_HOST" 2>/dev/null || log "could not delete veth $VETH_HOST"
    fi
    if netns_exists; then
        ip netns del "$NETNS" 2>/dev/null || log "could not delete netns $NETNS"
    fi
    rm -f "$dir/worker.env"
}

main() {
    [ $# -ge 1 ] || usage
    local sub="$1"
    shift
    case "$sub" in
    init) cmd_init "$@" ;;
    leave) cmd_leave "$@" ;;
    worker-start) cmd_worker_start "$@" ;;
    worker-stop) cmd_worker_stop "$@" ;;
    *) usage ;;
    esac
}

main "$@"

#!/usr/bin/env bash
# A PostgreSQL 15 test image for Miasma's end-to-end tests and benchmarks, built locally.
#
#   postgres-image.sh DOCKER_HOST [TAG]   build TAG (default miasma-test/postgres:15) on the
#                                         engine at DOCKER_HOST unless it already has it;
#                                         prints TAG as the last stdout line (logs on stderr)
#
# No registry is needed: the image is assembled from the host's Debian `postgresql-15`
# package (installed with apt-get if missing, without letting its postinst start a host
# cluster), a static busybox (`busybox-static`) for /bin/sh and the basic tools, and then
# `docker import`ed. It holds postgres, initdb, pg_ctl, psql and pg_isready, the server's
# modules (not llvmjit.so: JIT would pull in 100+ MB of LLVM), every library `ldd` lists
# at its own path (the dynamic loader included), /usr/share/postgresql/15 and
# /usr/share/zoneinfo: about 85 MB, built in a few seconds.
#
# The image behaves like the official one where the tests care:
#   * runs as `postgres` (uid/gid 999), PGDATA=/var/lib/postgresql/data, a VOLUME there;
#   * its entrypoint /usr/local/bin/pg-start initialises an empty PGDATA (initdb --locale=C
#     -E UTF8 -U postgres --auth=trust, plus `host all all all trust`: connections arrive
#     through docker-proxy from the bridge gateway), then execs postgres as PID 1 with
#     listen_addresses='*' and port ${PGPORT:-5432}; logs go to stderr (docker logs);
#   * STOPSIGNAL SIGINT: `docker stop` is a fast shutdown ("database system is shut down").
#     docker import on Docker 20.10 refuses `--change STOPSIGNAL`; then a one-line legacy
#     build (`FROM` the imported image) adds it.
# Unlike the official image, a stop during the very first initdb cannot leave a half
# initialised cluster behind: initdb writes into PGDATA/.init-tmp, which is renamed to
# PGDATA/.init-done once complete, whose entries are then moved into PGDATA with
# PG_VERSION last; the next start deletes the former and finishes moving the latter.
#
# The image carries the label miasma.test-image.recipe: a tag built by an older recipe is
# rebuilt. Environment knob: MIASMA_POSTGRES_LOCK (lock file serialising builds and the
# apt-get run, default ${TMPDIR:-/tmp}/miasma-postgres-image.lock).
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

readonly DEFAULT_TAG="miasma-test/postgres:15"
readonly PG_MAJOR=15
readonly PG_BIN="/usr/lib/postgresql/$PG_MAJOR/bin"
readonly PG_LIB="/usr/lib/postgresql/$PG_MAJOR/lib"
readonly PG_SHARE="/usr/share/postgresql/$PG_MAJOR"
readonly PG_UID=999
readonly PGDATA_DIR=/var/lib/postgresql/data
# Bump when the image's content or configuration changes: engines that keep their images
# between runs then rebuild instead of reusing a stale image.
readonly RECIPE=1
readonly RECIPE_LABEL=miasma.test-image.recipe

log() { printf 'postgres-image: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

usage() {
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

# --- cleanup ----------------------------------------------------------------------------

# Paths to delete and the policy-rc.d to put back when the script exits, however it exits.
CLEANUP_PATHS=()
cleanup() {
    restore_policy_rc
    if [ "${#CLEANUP_PATHS[@]}" -gt 0 ]; then
        rm -rf "${CLEANUP_PATHS[@]}"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- packages ---------------------------------------------------------------------------

# Installs, in one apt-get run, what is missing: the docker CLI, a static busybox, the
# PostgreSQL 15 server (its psql comes with it, from postgresql-client-15).
ensure_packages() {
    local -a missing=()
    command -v docker >/dev/null 2>&1 || missing+=(docker.io)
    static_busybox >/dev/null || missing+=(busybox-static)
    if [ ! -x "$PG_BIN/postgres" ] || [ ! -x "$PG_BIN/psql" ]; then
        missing+=("postgresql-$PG_MAJOR")
    fi
    if [ "${#missing[@]}" -gt 0 ]; then
        if [[ " ${missing[*]} " == *" postgresql-$PG_MAJOR "* ]]; then
            forbid_service_starts
        fi
        apt_install "${missing[@]}"
        restore_policy_rc
    fi
    command -v docker >/dev/null 2>&1 || die "no docker CLI after installing docker.io"
    static_busybox >/dev/null || die "no static busybox after installing busybox-static"
    [ -x "$PG_BIN/postgres" ] || die "no $PG_BIN/postgres after installing postgresql-$PG_MAJOR"
}

# --- the image --------------------------------------------------------------------------

engine_answers() { timeout 15 docker -H "$1" info >/dev/null 2>&1; }

# The recipe label of TAG on HOST; fails if the engine does not have TAG.
image_recipe() {
    docker -H "$1" image inspect --format "{{ index .Config.Labels \"$RECIPE_LABEL\" }}" "$2" \
        2>/dev/null
}

have_current_image() {
    local recipe
    recipe="$(image_recipe "$1" "$2")" || return 1
    if [ "$recipe" != "$RECIPE" ]; then
        log "image $2 exists but was built by recipe '${recipe:-none}', not $RECIPE: rebuilding"
        return 1
    fi
}

# Copies FILE into ROOT at the same path, following symlinks (a library's soname link
# becomes a regular file, which is all the dynamic loader needs).
copy_file() {
    local root="$1" file="$2"
    mkdir -p "$root$(dirname "$file")"
    cp -L "$file" "$root$file"
}

# Prints the libraries (and the dynamic loader) that ldd lists for FILE, one per line.
libraries_of() {
    local out
    out="$(LC_ALL=C ldd "$1" 2>&1)" || return 0 # not dynamic: nothing to copy
    if grep -q 'not found' <<<"$out"; then
        die "$1 needs libraries this host does not have: $(grep 'not found' <<<"$out" | tr -s ' \t\n' ' ')"
    fi
    # "libz.so.1 => /lib/x86_64-linux-gnu/libz.so.1 (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)"
    awk '$2 == "=>" && $3 ~ /^\// { print $3; next } $1 ~ /^\// { print $1 }' <<<"$out"
}

# The entrypoint; POSIX sh for busybox ash.
write_entrypoint() {
    cat >"$1" <<'ENTRYPOINT'
#!/bin/sh
# pg-start: entrypoint of Miasma's PostgreSQL test image (see scripts/postgres-image.sh).
#
#   pg-start [postgres] [POSTGRES-OPTIONS...]  initialise $PGDATA if it holds no cluster,
#                                              then exec postgres (PID 1: `docker stop`'s
#                                              SIGINT is its fast shutdown)
#   pg-start COMMAND [ARGS...]                 exec COMMAND (psql, sh, ...)
#
# initdb writes into $PGDATA/.init-tmp (the volume is mounted at $PGDATA, which cannot be
# renamed); complete, it is renamed $PGDATA/.init-done and its entries are moved into
# $PGDATA, PG_VERSION last. A stop at any point leaves either .init-tmp (deleted on the
# next start, which initialises again) or .init-done (whose move the next start finishes).
set -u

log() { echo "pg-start: $*" >&2; }
die() {
    log "error: $*"
    exit 1
}

if [ $# -gt 0 ] && [ "$1" = postgres ]; then
    shift
elif [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
    exec "$@"
fi

PGDATA="${PGDATA:-/var/lib/postgresql/data}"
export PGDATA
tmp="$PGDATA/.init-tmp"
ready="$PGDATA/.init-done"

# Started as root (`docker run -u 0`, a root-owned bind mount): hand PGDATA to postgres
# and run again as postgres (busybox su execs, so this stays PID 1; the `--` keeps su's
# option parser away from postgres options such as -c).
if [ "$(id -u)" = 0 ]; then
    if ! { mkdir -p "$PGDATA" && chown postgres:postgres "$PGDATA" && chmod 0700 "$PGDATA"; }; then
        die "cannot prepare $PGDATA for postgres"
    fi
    # shellcheck disable=SC2016 # expanded by the shell su starts
    exec su -s /bin/sh -c 'exec "$0" "$@"' -- postgres "$0" postgres "$@"
fi

# A stop signal while initialising: stop initdb and exit instead of starting postgres.
stopping=0
child=""
on_stop() {
    stopping=1
    if [ -n "$child" ]; then kill -TERM "$child" 2>/dev/null; fi
}
trap on_stop INT TERM QUIT

# Runs a command in the background and waits for it, so that a stop signal is handled at
# once (a trap waits for a foreground command to finish); returns its exit status.
run() {
    "$@" &
    child=$!
    while :; do
        wait "$child"
        rc=$?
        # wait returns early (> 128) when a trap fires: wait again if it still runs.
        kill -0 "$child" 2>/dev/null || break
    done
    child=""
    return "$rc"
}

finish_move() {
    for entry in "$ready"/* "$ready"/.[!.]*; do
        [ -e "$entry" ] || continue # a pattern that matched nothing
        [ "$entry" = "$ready/PG_VERSION" ] && continue
        mv "$entry" "$PGDATA/" || die "cannot move $entry into $PGDATA"
    done
    if [ -e "$ready/PG_VERSION" ]; then
        mv "$ready/PG_VERSION" "$PGDATA/PG_VERSION" || die "cannot move $ready/PG_VERSION"
    fi
    rmdir "$ready" || die "cannot remove $ready"
    sync
}

mkdir -p "$PGDATA" || die "cannot create $PGDATA"
chmod 0700 "$PGDATA" ||
    die "cannot chmod $PGDATA: it must be owned by $(id -un) (uid $(id -u)); it is: $(ls -ldn "$PGDATA")"

if [ -d "$ready" ]; then
    log "finishing the move of an initialised cluster into $PGDATA"
    finish_move
elif [ ! -s "$PGDATA/PG_VERSION" ]; then
    rm -rf "$tmp" || die "cannot remove $tmp"
    for entry in "$PGDATA"/* "$PGDATA"/.[!.]*; do
        [ -e "$entry" ] || continue
        [ "$entry" = "$PGDATA/lost+found" ] && continue
        die "$PGDATA has no PG_VERSION but is not empty ($entry): not initialising over it"
    done
    log "initialising a new cluster in $PGDATA"
    if ! run initdb -D "$tmp" --locale=C -E UTF8 -U postgres --auth=trust --no-instructions; then
        rm -rf "$tmp"
        [ "$stopping" = 1 ] && {
            log "stopped during initdb"
            exit 0
        }
        die "initdb failed"
    fi
    if [ "$stopping" = 0 ]; then
        printf '\n# Miasma test image: connections arrive through docker-proxy from the bridge.\n%s\n' \
            'host all all all trust' >>"$tmp/pg_hba.conf" || die "cannot write $tmp/pg_hba.conf"
        printf '\n# Miasma test image: llvmjit.so is left out.\njit = off\n' >>"$tmp/postgresql.conf" ||
            die "cannot write $tmp/postgresql.conf"
        sync
        mv "$tmp" "$ready" || die "cannot rename $tmp to $ready"
        finish_move
        log "cluster initialised"
    else
        rm -rf "$tmp"
    fi
fi

if [ "$stopping" = 1 ]; then
    log "stopped before postgres started"
    exit 0
fi
exec postgres -c listen_addresses='*' -p "${PGPORT:-5432}" "$@"
ENTRYPOINT
    chmod 0755 "$1"
}

# Fills ROOT with the image's files.
assemble_rootfs() {
    local root="$1" busybox applet file lib libs libc_dir
    local -a objects=()
    busybox="$(static_busybox)"

    mkdir -p "$root"/{bin,etc,root,tmp,usr/local/bin,usr/share,proc,sys,dev,run}
    mkdir -p "$root"/var/run/postgresql "$root$PGDATA_DIR" "$root$PG_BIN" "$root$PG_LIB"
    chmod 1777 "$root/tmp"
    chmod 0700 "$root$PGDATA_DIR"
    chmod 3777 "$root/var/run/postgresql"
    ln -s bin "$root/sbin"
    ln -s ../bin "$root/usr/bin"
    ln -s ../bin "$root/usr/sbin"
    cp "$busybox" "$root/bin/busybox"
    chmod 0755 "$root/bin/busybox"
    for applet in $("$root/bin/busybox" --list); do
        [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
    done

    printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' \
        "postgres:x:$PG_UID:$PG_UID:PostgreSQL:/var/lib/postgresql:/bin/sh" \
        'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$root/etc/passwd"
    printf '%s\n' 'root:x:0:' "postgres:x:$PG_UID:" 'nogroup:x:65534:' >"$root/etc/group"
    printf '%s\n' 'passwd: files' 'group: files' 'shadow: files' 'hosts: files dns' \
        >"$root/etc/nsswitch.conf"
    printf '%s\n' '127.0.0.1 localhost' '::1 localhost ip6-localhost ip6-loopback' \
        >"$root/etc/hosts"
    ln -s /usr/share/zoneinfo/Etc/UTC "$root/etc/localtime"

    for file in postgres initdb pg_ctl psql pg_isready; do
        cp -L "$PG_BIN/$file" "$root$PG_BIN/$file"
        objects+=("$PG_BIN/$file")
    done
    for file in "$PG_LIB"/*.so; do
        case "${file##*/}" in llvmjit*) continue ;; esac
        cp -L "$file" "$root$file"
        objects+=("$file")
    done
    mkdir -p "$root$(dirname "$PG_SHARE")"
    cp -a "$PG_SHARE" "$root$PG_SHARE"
    cp -a /usr/share/zoneinfo "$root/usr/share/zoneinfo"

    for file in "${objects[@]}"; do
        libs="$(libraries_of "$file")" # a plain assignment: set -e sees a failure
        for lib in $libs; do
            [ -e "$root$lib" ] || copy_file "$root" "$lib"
        done
    done
    # glibc < 2.34 loads libnss_files with dlopen (ldd does not list it) to look up the
    # postgres user; newer ones have it built in. Copy it if the host has one.
    libc_dir="$(LC_ALL=C ldd "$PG_BIN/postgres" | awk '$1 == "libc.so.6" { print $3 }' | xargs dirname)"
    if [ -e "$libc_dir/libnss_files.so.2" ] && [ ! -e "$root$libc_dir/libnss_files.so.2" ]; then
        copy_file "$root" "$libc_dir/libnss_files.so.2"
    fi

    # initdb imports the system's collations from `locale -a`: give it glibc's C.UTF-8
    # locale (400 KB) where the host has one, and a `locale` that lists what there is.
    local -a locales=(C POSIX)
    for file in /usr/lib/locale/C.*; do
        [ -d "$file" ] || continue
        mkdir -p "$root/usr/lib/locale"
        cp -a "$file" "$root$file"
        locales+=("${file##*/}")
    done
    cat >"$root/bin/locale" <<EOF
#!/bin/sh
# A stand-in for glibc's locale: only \`locale -a\`, which initdb runs.
[ "\${1:-}" = -a ] || { echo "locale: only -a is supported" >&2; exit 1; }
printf '%s\n' ${locales[*]}
EOF
    chmod 0755 "$root/bin/locale"

    write_entrypoint "$root/usr/local/bin/pg-start"
}

# Writes the rootfs as a tar: root-owned, except postgres' home, data directory and socket
# directory (owned by uid/gid 999 whoever builds, so a fresh volume gets them too).
write_tar() {
    local root="$1" tarball="$2"
    tar --numeric-owner --owner=0 --group=0 -C "$root" \
        --exclude=./var/lib/postgresql --exclude=./var/run/postgresql -cf "$tarball" .
    tar --numeric-owner --owner="$PG_UID" --group="$PG_UID" -C "$root" \
        -rf "$tarball" ./var/lib/postgresql ./var/run/postgresql
}

# docker import with the image's configuration; STOPSIGNAL as a second step if the engine
# refuses it as an import change (Docker 20.10 does).
import_image() {
    local host="$1" tag="$2" tarball="$3" out temp
    local -a changes=(
        --change "VOLUME $PGDATA_DIR"
        --change "USER postgres"
        --change "ENV PGDATA=$PGDATA_DIR"
        --change "ENV PATH=$PG_BIN:/bin:/usr/bin"
        --change "EXPOSE 5432"
        --change 'ENTRYPOINT ["/usr/local/bin/pg-start"]'
        --change 'CMD ["postgres"]'
        --change "LABEL $RECIPE_LABEL=$RECIPE"
    )
    local message="Miasma test image: PostgreSQL $PG_MAJOR from Debian's postgresql-$PG_MAJOR + static busybox"
    if out="$(docker -H "$host" import "${changes[@]}" --change 'STOPSIGNAL SIGINT' \
        --message "$message" - "$tag" <"$tarball" 2>&1)"; then
        log "imported $tag (STOPSIGNAL set by docker import): $out"
        return 0
    fi
    grep -qi 'stopsignal' <<<"$out" || die "docker import failed: $out"
    log "docker import refuses STOPSIGNAL ($out): adding it with a legacy build step"
    temp="$tag-import-$$"
    [[ "$temp" == *:* ]] || temp="$temp:import"
    out="$(docker -H "$host" import "${changes[@]}" --message "$message" - "$temp" <"$tarball")" ||
        die "docker import failed"
    log "imported $temp: $out"
    if ! printf 'FROM %s\nSTOPSIGNAL SIGINT\n' "$temp" |
        DOCKER_BUILDKIT=0 docker -H "$host" build --quiet --force-rm -t "$tag" - >&2; then
        docker -H "$host" image rm "$temp" >/dev/null 2>&1 || true
        die "docker build (STOPSIGNAL step) failed"
    fi
    # Only untags: the final image is its child.
    docker -H "$host" image rm "$temp" >/dev/null 2>&1 || log "could not remove the tag $temp"
}

main() {
    if [ $# -lt 1 ] || [ $# -gt 2 ]; then usage; fi
    case "$1" in -h | --help | help) usage ;; esac
    local host="$1" tag="${2:-$DEFAULT_TAG}" started root tarball lock size stopsignal old_id
    if command -v docker >/dev/null 2>&1 && have_current_image "$host" "$tag"; then
        log "image $tag already present"
        printf '%s\n' "$tag"
        return 0
    fi

    # One build at a time on this machine (and one policy-rc.d swap).
    lock="${MIASMA_POSTGRES_LOCK:-${TMPDIR:-/tmp}/miasma-postgres-image.lock}"
    exec 9>>"$lock"
    flock -w 900 9 || die "timed out waiting for $lock"
    if command -v docker >/dev/null 2>&1 && have_current_image "$host" "$tag" 2>/dev/null; then
        log "image $tag built meanwhile"
        printf '%s\n' "$tag"
        return 0
    fi
    ensure_packages
    engine_answers "$host" || die "no Docker engine answers at $host"

    # A rebuild (older recipe) leaves the old image untagged: removed below unless in use.
    old_id="$(docker -H "$host" image inspect --format '{{ .Id }}' "$tag" 2>/dev/null || true)"
    started="$(date +%s.%N)"
    root="$(mktemp -d "${TMPDIR:-/tmp}/miasma-pg-rootfs.XXXXXX")"
    tarball="$root.tar"
    CLEANUP_PATHS+=("$root" "$tarball")
    assemble_rootfs "$root"
    write_tar "$root" "$tarball"
    import_image "$host" "$tag" "$tarball"

    size="$(docker -H "$host" image inspect --format '{{ .Size }}' "$tag")"
    stopsignal="$(docker -H "$host" image inspect --format '{{ .Config.StopSignal }}' "$tag")"
    [ "$stopsignal" = SIGINT ] || die "$tag has StopSignal '$stopsignal', not SIGINT"
    log "built $tag ($((size / 1000000)) MB) in $(elapsed "$started")s"
    if [ -n "$old_id" ]; then
        docker -H "$host" image rm "$old_id" >/dev/null 2>&1 || log "kept the old $tag ($old_id): in use"
    fi
    printf '%s\n' "$tag"
}

main "$@"

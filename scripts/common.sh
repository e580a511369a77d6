#!/usr/bin/env bash
# Helpers shared by docker-engine.sh, postgres-image.sh, registry.sh and swarm.sh (sourced,
# not run).
# The sourcing script defines log() and die() first; these use them.

is_root() { [ "$(id -u)" -eq 0 ]; }

as_root() {
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $*"
    fi
}

# Seconds since START (a `date +%s.%N`), one decimal.
elapsed() { awk -v s="$1" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }'; }

# Prints the path of a statically linked busybox, if there is one.
static_busybox() {
    local candidate
    for candidate in /bin/busybox /usr/bin/busybox "$(command -v busybox 2>/dev/null || true)"; do
        if [ -z "$candidate" ] || [ ! -x "$candidate" ]; then continue; fi
        # ldd fails ("not a dynamic executable") on a static binary.
        if ! LC_ALL=C ldd "$candidate" >/dev/null 2>&1; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

# A package's postinst may start its service through invoke-rc.d (postgresql-15 its cluster
# on 5432, docker-registry a registry on 5000). A policy-rc.d that exits 101 ("action
# forbidden") stops the start; it is in place only for the apt-get run and the previous
# policy-rc.d (if any) is put back afterwards (the sourcing script's EXIT trap calls
# restore_policy_rc), even if apt-get fails.
readonly POLICY_RC=/usr/sbin/policy-rc.d
POLICY_STATE=""  # "" (untouched), "absent" (ours is there, none before) or a backup path

forbid_service_starts() {
    local backup
    if [ -e "$POLICY_RC" ] || [ -L "$POLICY_RC" ]; then
        backup="$(as_root mktemp "$POLICY_RC.miasma-backup.XXXXXX")"
        as_root mv -f "$POLICY_RC" "$backup"
        POLICY_STATE="$backup"
    else
        POLICY_STATE=absent
    fi
    printf '#!/bin/sh\n# Written by Miasma'\''s scripts for one apt-get run.\nexit 101\n' |
        as_root tee "$POLICY_RC" >/dev/null
    as_root chmod 0755 "$POLICY_RC"
}

restore_policy_rc() {
    case "$POLICY_STATE" in
    "") return 0 ;;
    absent) as_root rm -f "$POLICY_RC" || log "could not remove $POLICY_RC" ;;
    *) as_root mv -f "$POLICY_STATE" "$POLICY_RC" || log "could not restore $POLICY_RC from $POLICY_STATE" ;;
    esac
    POLICY_STATE=""
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "cannot install $*: apt-get not found"
    log "apt-get update"
    # 9>&-: nothing apt-get starts may hold on to the build lock.
    as_root apt-get update >&2 9>&-
    log "apt-get install -y $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" \
        >&2 9>&-
}

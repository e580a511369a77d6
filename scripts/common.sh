#!/usr/bin/env bash
# Helpers shared by docker-engine.sh, postgres-image.sh and swarm.sh (sourced, not run).
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

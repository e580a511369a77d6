#!/usr/bin/env bash
# Caddy, the router's proxy (docs/routing.md), from Debian's `caddy` package.
#
#   caddy.sh    install Debian's caddy unless a `caddy` binary is on PATH; prints its path
#               as the last stdout line (logs on stderr)
#
# The package's postinst would start a caddy service on :80; a policy-rc.d that exits 101
# stops that for the apt-get run (common.sh). Installs are serialised by a lock
# (MIASMA_APT_LOCK, default ${TMPDIR:-/tmp}/miasma-apt.lock).
set -euo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

log() { printf 'caddy: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

main() {
    local lock
    if ! command -v caddy >/dev/null 2>&1; then
        lock="${MIASMA_APT_LOCK:-${TMPDIR:-/tmp}/miasma-apt.lock}"
        exec 9>>"$lock"
        flock -w 900 9 || die "timed out waiting for $lock"
        if ! command -v caddy >/dev/null 2>&1; then
            trap restore_policy_rc EXIT
            forbid_service_starts
            apt_install caddy
            restore_policy_rc
        fi
    fi
    command -v caddy >/dev/null 2>&1 || die "no caddy binary after installing Debian's caddy"
    command -v caddy
}

main "$@"

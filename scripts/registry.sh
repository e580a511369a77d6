#!/usr/bin/env bash
# Installs Debian's docker-registry (the distribution registry, /usr/bin/docker-registry)
# without letting its package start the system service: the upgrade tests run a registry
# of their own on loopback (tests/registry.py), which the private engine pulls from over
# plain HTTP (Docker trusts 127.0.0.0/8 without TLS). Nothing to do when it is installed.
#
# Usage: scripts/registry.sh   (prints the binary's path)
set -euo pipefail

log() { printf 'registry: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# shellcheck source=scripts/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
trap restore_policy_rc EXIT

if ! command -v docker-registry >/dev/null 2>&1; then
    forbid_service_starts
    apt_install docker-registry
    restore_policy_rc
fi
command -v docker-registry || die "no docker-registry after installing it"

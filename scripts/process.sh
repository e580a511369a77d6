#!/usr/bin/env bash
# Process helpers shared by docker-engine.sh and swarm.sh (sourced, not run).
# They look at /proc only, so they never signal anything.

read_pid() {
    if [ -r "$1" ]; then tr -dc '0-9' <"$1"; fi
}

# True if PID is alive, is named NAME and its command line mentions NEEDLE.
pid_is() {
    local pid="$1" name="$2" needle="$3" comm cmdline
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    comm="$(cat "/proc/$pid/comm" 2>/dev/null)" || return 1
    [ "$comm" = "$name" ] || return 1
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
    [[ "$cmdline" == *"$needle"* ]]
}

# True if PID exists and is not a zombie (an exited child init has not reaped yet).
alive() {
    local stat
    stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [ "${stat:0:1}" != Z ]
}

#!/bin/sh
# The harouterd container's entrypoint. It makes sure that stopping the
# container can never strand VIPs.
#
# Every keepalived that `harouterd run` starts lives in the container's PID
# namespace. When that namespace has its own PID 1 (no --pid=host), the
# kernel SIGKILLs everything in it once PID 1 exits: each keepalived dies
# without removing its VIPs or telling its peer, the peer takes over after
# three adverts, and both nodes hold the addresses. So:
#
# - PID 1 of a namespace of its own (`docker run` without --pid=host):
#   this script stays PID 1, runs harouterd as its child (passing SIGTERM,
#   SIGINT and SIGHUP on), and once harouterd has exited, for whatever
#   reason, stops every process left (keepalived, conntrackd: SIGTERM, so
#   each removes its VIPs and sends its priority-0 advert; SIGKILL after
#   HAROUTERD_STOP_WAIT seconds) before exiting with harouterd's status.
#   keepalived then never outlives harouterd, whatever on_exit says.
# - the host's PID namespace (--pid=host): harouterd replaces this script;
#   keepalived outlives the container as on_exit says, and the next
#   container adopts it (an upgrade is not a failover).
# - a namespace of its own where this script is not PID 1 (`docker run
#   --init`): refuses to start, since keepalived would die with a PID 1 that
#   does not stop it first. HAROUTERD_PID_NAMESPACE=host overrides this for
#   a PID namespace that outlives the container (a system container's).
#
# Commands other than `run` (check, render, status, state-change, ...) are
# run as they are.

set -u

HAROUTERD=${HAROUTERD:-/usr/sbin/harouterd}
STOP_WAIT=${HAROUTERD_STOP_WAIT:-5}
# The kernel's initial PID namespace always has this inode (0xEFFFFFFC).
HOST_PID_NS=4026531836

say() { printf 'harouterd-entrypoint: %s\n' "$*" >&2; }

[ "${1:-}" = run ] || exec "$HAROUTERD" "$@"

# A daemon that detached would look, to the supervision below, like one
# that exited at once: `run` always stays in the foreground here.
foreground=
for arg in "$@"; do
    case "$arg" in --foreground | -f) foreground=1 ;; esac
done
[ -n "$foreground" ] || set -- "$@" --foreground

if [ "$$" != 1 ]; then
    ns=$(stat -L -c %i /proc/self/ns/pid 2>/dev/null) || ns=
    if [ "$ns" = "$HOST_PID_NS" ] || [ "${HAROUTERD_PID_NAMESPACE:-}" = host ]; then
        exec "$HAROUTERD" "$@"
    fi
    say "refusing to start: this container has a PID namespace of its own" \
        "(pid namespace inode ${ns:-unknown}) whose PID 1 is not this script" \
        "(docker run --init?). Every keepalived would be SIGKILLed with the" \
        "container, its VIPs left on the interfaces while the peer takes over." \
        "Run with --pid=host (keepalived outlives the container), or without" \
        "--init (this script, as PID 1, stops keepalived cleanly first), or set" \
        "HAROUTERD_PID_NAMESPACE=host if this PID namespace outlives the container."
    exit 2
fi

say "PID 1 of the container's own PID namespace: keepalived cannot outlive" \
    "this container, so every keepalived is stopped cleanly when harouterd" \
    "exits, whatever on_exit says (run with --pid=host to keep keepalived" \
    "running across a container restart)."

"$HAROUTERD" "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM
trap 'kill -INT "$child" 2>/dev/null' INT
trap 'kill -HUP "$child" 2>/dev/null' HUP
status=0
# `wait` returns early (status > 128) when a trapped signal arrives; the
# child is still there then (or a zombie, which `kill -0` still finds).
while kill -0 "$child" 2>/dev/null; do
    wait "$child"
    status=$?
done
trap '' TERM INT HUP

# Whether any process but this one is left that has not exited (zombies
# have: they are reparented to us and reaped whenever the shell waits).
# No command substitution here: it would fork a process of our own.
others_alive() {
    for dir in /proc/[0-9]*; do
        [ "${dir#/proc/}" = 1 ] && continue
        read -r stat 2>/dev/null <"$dir/stat" || continue
        case "${stat##*) }" in Z*) continue ;; esac
        return 0
    done
    return 1
}

if others_alive; then
    say "harouterd exited (status $status); stopping what it left running"
    # From PID 1, -1 is every other process of this PID namespace.
    kill -TERM -1 2>/dev/null
    deadline=$(($(date +%s) + STOP_WAIT))
    while others_alive; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
            say "still running after ${STOP_WAIT}s: killing them"
            kill -KILL -1 2>/dev/null
            break
        fi
        sleep 0.1
    done
fi
exit "$status"

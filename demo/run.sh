#!/usr/bin/env bash
# harouterd live demo (`make demo`, as root): two "network nodes" A and B
# built from network namespaces on this machine, three HA routers doing real
# VRRP with real keepalived, one harouterd per node. Shows the election, a
# keepalived killed and respawned, and node A going away so that node B takes
# every router over, as harouterd sees it (status, events, log).
#
# Everything it creates lives in one temporary directory and in namespaces
# named hrdemo-*; all of it is removed on every exit path (success, failure,
# Ctrl-C). See demo/README.md.
set -euo pipefail

NS_PREFIX=hrdemo
TMP_PREFIX=harouterd-demo.
ROUTERS=(r1 r2 r3)
NODES=(A B)
START_TIME=$EPOCHREALTIME

say() { printf '==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
die() {
    printf '\ndemo FAILED: %s\n' "$*" >&2
    exit 1
}

if [ "$(id -u)" -ne 0 ]; then
    echo "The harouterd demo builds network namespaces and runs keepalived, so it needs root." >&2
    echo "Please run it as root, e.g.:  sudo make demo" >&2
    exit 2
fi
# keepalived and ip live in sbin, which a non-login PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

cd "$(dirname "$0")/.."
REPO=$(pwd)

# One demo at a time: the clean-up of leftovers below would break another.
# The lock file names the demo holding it. Long-lived children get `9>&-`,
# but should a crashed demo's leftovers still hold the lock, only a live
# demo script counts; the leftovers go below and the lock with them.
LOCK=/run/harouterd-demo.lock
exec 9<>"$LOCK"
LOCKED=0
if flock -n 9; then
    LOCKED=1
else
    holder=$(head -c 20 "$LOCK" 2>/dev/null | tr -cd 0-9)
    if [ -n "$holder" ] && [ "$holder" != "$$" ] &&
        tr '\0' ' ' <"/proc/$holder/cmdline" 2>/dev/null | grep -q 'demo/run\.sh'; then
        die "another harouterd demo is running (pid $holder)"
    fi
fi

# Live processes whose command line contains $1 (the grep that finds them,
# whose own command line contains $1 too, is gone by then).
pids_matching() {
    local pid
    # shellcheck disable=SC2013 # one pid per line, no spaces
    for pid in $(grep -alsF -- "$1" /proc/[0-9]*/cmdline 2>/dev/null | sed -n 's|^/proc/\([0-9]*\)/cmdline$|\1|p'); do
        [ "$pid" != "$$" ] && [ -e "/proc/$pid" ] && echo "$pid"
    done
    return 0
}

kill_matching() {
    local needle=$1 pids i
    for i in 1 2 3 4 5 6 7 8 9 10; do
        pids=$(pids_matching "$needle")
        [ -z "$pids" ] && return 0
        # shellcheck disable=SC2086
        kill -9 $pids 2>/dev/null || true
        sleep 0.1
    done
}

our_namespaces() { ip netns list 2>/dev/null | awk -v p="$NS_PREFIX-" 'index($1, p) == 1 {print $1}'; }

delete_namespaces() {
    local ns
    for ns in $(our_namespaces); do
        ip netns delete "$ns" 2>/dev/null || true
    done
}

# Leftovers of an earlier demo that was killed before it could clean up.
leftovers=$(pids_matching "/$TMP_PREFIX")
left_ns=$(our_namespaces)
if [ -n "$leftovers$left_ns" ]; then
    say "cleaning up what an earlier demo run left behind"
fi
kill_matching "/$TMP_PREFIX"
delete_namespaces
rm -rf "${TMPDIR:-/tmp}/$TMP_PREFIX"*
if [ "$LOCKED" != 1 ]; then
    flock -w 5 9 || die "$LOCK is held by a process that is not part of a demo"
fi
: >"$LOCK"
echo "$$" >"$LOCK"

DIR=$(mktemp -d -t "${TMP_PREFIX}XXXXXX")
chmod 755 "$DIR"
EVENTS_PID=
DAEMONS=()
OK=0
INTERRUPTED=0

cleanup() {
    local rc=$?
    trap - EXIT INT TERM ERR
    set +e
    [ -n "$EVENTS_PID" ] && kill "$EVENTS_PID" 2>/dev/null
    for pid in "${DAEMONS[@]}"; do
        kill -9 "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    done
    # The daemons first (so that nothing respawns keepalived), then every
    # process naming our directory (keepalived, its VRRP child, clients).
    kill_matching "$DIR/"
    delete_namespaces
    if [ "$OK" != 1 ] && [ "$INTERRUPTED" != 1 ] && [ -d "$DIR" ]; then
        for n in "${NODES[@]}"; do
            if [ -s "$DIR/$n/harouterd.log" ]; then
                printf '\n--- last lines of node %s daemon log ---\n' "$n" >&2
                tail -n 15 "$DIR/$n/harouterd.log" >&2
            fi
        done
        if [ -s "$DIR/build.log" ]; then
            printf '\n--- build output ---\n' >&2
            tail -n 30 "$DIR/build.log" >&2
        fi
    fi
    rm -rf "$DIR"
    : >"$LOCK"
    if [ "$OK" = 1 ]; then
        say "cleaned up: daemons, keepalived, namespaces and $DIR are gone"
        exit 0
    fi
    [ "$rc" -eq 0 ] && rc=1
    echo "demo: stopped (exit $rc); cleaned up: nothing it created is left" >&2
    exit "$rc"
}
trap cleanup EXIT
# A command that fails unexpectedly (set -e) says what it was.
on_err() {
    local rc=$?
    [ "${BASHPID:-$$}" = "$$" ] || exit "$rc"
    die "unexpected failure (exit $rc) at line $1: $2"
}
set -E
trap 'on_err "$LINENO" "$BASH_COMMAND"' ERR
trap 'INTERRUPTED=1; printf "\ndemo: interrupted\n" >&2; exit 130' INT
trap 'INTERRUPTED=1; printf "\ndemo: terminated\n" >&2; exit 143' TERM

# ---------------------------------------------------------------------------
say "checking what the demo needs (keepalived, iproute2, curl)"
need=()
command -v keepalived >/dev/null || need+=(keepalived)
command -v ip >/dev/null || need+=(ip)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
    info "installing: ${need[*]} (apt-get)"
    ./scripts/install-test-deps.sh "${need[@]}" >"$DIR/deps.log" 2>&1 ||
        { cat "$DIR/deps.log" >&2; die "could not install ${need[*]}"; }
fi
for t in keepalived ip curl; do command -v "$t" >/dev/null || die "$t is still missing"; done
KEEPALIVED=$(command -v keepalived)

CARGO=${CARGO:-cargo}
BIN=$REPO/target/release/harouterd
if command -v "$CARGO" >/dev/null; then
    say "building harouterd (cargo build --release --locked)..."
    "$CARGO" build --release --locked --quiet >"$DIR/build.log" 2>&1 || die "the build failed"
elif [ -x "$BIN" ]; then
    say "cargo not found: using the existing $BIN"
else
    die "cargo not found (install Rust: https://rustup.rs), and no target/release/harouterd to use"
fi
H=$BIN

# ---------------------------------------------------------------------------
say "building the lab: nodes A and B, routers ${ROUTERS[*]} (one namespace per router per node)"
for r in "${ROUTERS[@]}"; do
    n=${r#r}
    for node in "${NODES[@]}"; do
        ns=$NS_PREFIX-$node-$r
        ip netns add "$ns"
        ip -n "$ns" link set lo up
        # The router's internal network port; its VIP moves with the router.
        ip -n "$ns" link add "qr-$r" type veth peer name "qr-$r-p"
        ip -n "$ns" link set "qr-$r" up
        ip -n "$ns" link set "qr-$r-p" up
    done
    # The HA network: a veth pair between the router's twin namespaces.
    ip link add "ha-$r" netns "$NS_PREFIX-A-$r" type veth peer name "ha-$r" netns "$NS_PREFIX-B-$r"
    i=1
    for node in "${NODES[@]}"; do
        ns=$NS_PREFIX-$node-$r
        ip -n "$ns" link set "ha-$r" up
        ip -n "$ns" addr add "169.254.192.$i/18" dev "ha-$r"
        i=$((i + 1))
    done
done

for node in "${NODES[@]}"; do
    mkdir -p "$DIR/$node"
    conf=$DIR/$node/harouterd.conf
    {
        echo "[daemon]"
        echo "state_path = $DIR/$node/state"
        echo "keepalived_path = $KEEPALIVED"
        echo "ha_vrrp_advert_int = 1"
        echo "on_exit = stop"
        for r in "${ROUTERS[@]}"; do
            n=${r#r}
            echo
            echo "[router $r]"
            echo "namespace = $NS_PREFIX-$node-$r"
            echo "ha_interface = ha-$r"
            echo "vrid = $n"
            echo "vip = 10.$n.0.1/24 dev qr-$r"
        done
    } >"$conf"
    "$H" check -c "$conf" || die "harouterd check rejected $conf"
done
info "configs: $DIR/{A,B}/harouterd.conf (advert_int 1, equal priority, nopreempt, on_exit = stop)"

sock() { echo "$DIR/$1/state/harouterd.sock"; }

start_daemon() {
    local node=$1
    "$H" run -c "$DIR/$node/harouterd.conf" --foreground --pidfile "$DIR/$node/harouterd.pid" \
        </dev/null >>"$DIR/$node/harouterd.log" 2>&1 9>&- &
    eval "DAEMON_$node=$!"
    DAEMONS+=("$!")
}

# The effective state node $1 reports for router $2 (empty when unknown).
state_of() {
    "$H" status --socket "$(sock "$1")" 2>/dev/null | awk -v r="$2" '$1 == r {print $4}'
}

vip_on() { ip -n "$NS_PREFIX-$1-$2" -o addr show dev "ha-$2" 2>/dev/null | grep -qw "169.254.0.${2#r}/24"; }

# Every router primary on exactly one node, and backup on the other.
converged() {
    local r a b
    for r in "${ROUTERS[@]}"; do
        a=$(state_of A "$r")
        b=$(state_of B "$r")
        case "$a/$b" in
        primary/backup) vip_on A "$r" && ! vip_on B "$r" || return 1 ;;
        backup/primary) vip_on B "$r" && ! vip_on A "$r" || return 1 ;;
        *) return 1 ;;
        esac
    done
}

# A daemon that exits on its own ends the demo at once.
check_daemons() {
    local node pid st
    for node in "${NODES[@]}"; do
        [ "$node" = "${STOPPING:-}" ] && continue
        eval "pid=\${DAEMON_$node:-}"
        [ -n "$pid" ] || continue
        st=Z
        { read -r _ _ st _ <"/proc/$pid/stat"; } 2>/dev/null || true
        [ "$st" != Z ] || die "node $node's harouterd (pid $pid) exited unexpectedly"
    done
}

# wait_until SECONDS WHAT COMMAND...: polls every 50 ms.
wait_until() {
    local limit=$1 what=$2 t0=$EPOCHREALTIME
    shift 2
    while check_daemons && ! "$@"; do
        if [ "$(elapsed_ms "$t0")" -gt $((limit * 1000)) ]; then
            die "$what: not reached after $limit s"
        fi
        sleep 0.05
    done
}

# Milliseconds since $1 (an $EPOCHREALTIME value).
elapsed_ms() {
    local now=$EPOCHREALTIME
    echo $(((10#${now/[.,]/} - 10#${1/[.,]/}) / 1000))
}

wait_socket() { [ -S "$(sock "$1")" ]; }

all_vips_on() {
    local r
    for r in "${ROUTERS[@]}"; do vip_on "$1" "$r" || return 1; done
}

# ---------------------------------------------------------------------------
say "starting harouterd on node A, then on node B once A holds every router"
t0=$EPOCHREALTIME
start_daemon A
wait_until 10 "node A's control socket" wait_socket A
wait_until 20 "node A primary for every router" all_vips_on A
info "node A holds every router's VIP after $(elapsed_ms "$t0") ms (VRRP election, advert_int 1)"
start_daemon B
wait_until 10 "node B's control socket" wait_socket B
wait_until 20 "exactly one primary per router" converged
info "one primary per router after $(elapsed_ms "$t0") ms"

for node in "${NODES[@]}"; do
    say "harouterd status on node $node"
    "$H" status --socket "$(sock "$node")" | sed 's/^/    /'
done

# ---------------------------------------------------------------------------
say "following node B's events (harouterd events), shown as [events B]"
"$H" events --socket "$(sock B)" > >(exec sed -u 's/^/    [events B] /' 9>&-) 2>/dev/null 9>&- &
EVENTS_PID=$!
sleep 0.2

say "kill -9 node A's keepalived for r1"
pidfile=$DIR/A/state/ha_confs/r1.pid.keepalived
r1conf=$DIR/A/state/ha_confs/r1/keepalived.conf
old=$(cat "$pidfile")
log_lines=$(wc -l <"$DIR/A/harouterd.log")
t0=$EPOCHREALTIME
kill -9 "$old"
# Tight polling: this is the measurement (bash builtins only, no forks).
new=
while :; do
    if { read -r p <"$pidfile"; } 2>/dev/null && [ -n "$p" ] && [ "$p" != "$old" ] &&
        [ -r "/proc/$p/cmdline" ]; then
        new=$p
        break
    fi
    if [ "$(elapsed_ms "$t0")" -gt 5000 ]; then
        die "keepalived for r1 on node A not respawned 5 s after kill -9"
    fi
done
took=$(elapsed_ms "$t0")
tr '\0' ' ' <"/proc/$new/cmdline" | grep -qF -- "-f $r1conf" || die "pid $new is not r1's keepalived"
sleep 0.1
info "node A's harouterd log:"
tail -n +"$((log_lines + 1))" "$DIR/A/harouterd.log" |
    grep -E 'router r1: (keepalived \(pid|keepalived started|killing orphaned|transitioned)' | sed 's/^/      /'
info "keepalived for r1 running again (pid $old -> $new) $took ms after the kill"

info "r1's VIP left node A with the old keepalived, so VRRP elects again: node B takes"
info "r1 over, and A's new keepalived stays backup (equal priority, nopreempt)"
t0=$EPOCHREALTIME
wait_until 20 "one primary per router after the respawn" converged
where=
for r in "${ROUTERS[@]}"; do
    if [ "$(state_of A "$r")" = primary ]; then where="$where $r:A"; else where="$where $r:B"; fi
done
info "one primary per router again after $(elapsed_ms "$t0") ms; primary on:$where"

# ---------------------------------------------------------------------------
say "stopping node A's harouterd (SIGTERM, on_exit = stop: its keepalived stop too)"
t0=$EPOCHREALTIME
STOPPING=A
kill -TERM "$DAEMON_A"
all_primary_on_b() {
    local r
    for r in "${ROUTERS[@]}"; do [ "$(state_of B "$r")" = primary ] && vip_on B "$r" || return 1; done
}
wait_until 20 "node B primary for every router" all_primary_on_b
b_took=$(elapsed_ms "$t0")
wait "$DAEMON_A" || die "node A's harouterd exited with status $?"
sleep 0.2
info "node B primary for every router $b_took ms after node A was stopped"

say "harouterd status on node B"
"$H" status --socket "$(sock B)" | sed 's/^/    /'
vips=
for r in "${ROUTERS[@]}"; do
    a=$(ip -n "$NS_PREFIX-B-$r" -o -4 addr show dev "qr-$r" | awk '{print $4}')
    vips="$vips $r:${a:-none}"
done
info "internal VIPs now on node B:$vips"

kill "$EVENTS_PID" 2>/dev/null || true
EVENTS_PID=
OK=1
say "done in $(elapsed_ms "$START_TIME") ms"

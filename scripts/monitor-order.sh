#!/usr/bin/env bash
# Writes packaging/order/TARGET.txt (see build.rs): the symbols a running
# `state-change` monitor executes once its start-up is over, in a profile
# taken under callgrind: one monitor in a namespace of its own, started as
# backup and again as primary, each time its initial state reported, 20 VIP
# flips and then 200 back to back reported to an agent socket, the state
# file synced, SIGTERM. Everything before `release_startup_memory`
# (start-up, given back then) is left out.
#
#   scripts/monitor-order.sh [TARGET...]   (default: x86_64-unknown-linux-musl
#                                           x86_64-unknown-linux-gnu)
#
# Needs root (a network namespace), valgrind, python3, iproute2. Takes about
# a minute per target (an unstripped release build in target/order, then
# the profile). Run it after a toolchain or version change; `make bench`
# shows what the monitors cost.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(x86_64-unknown-linux-musl x86_64-unknown-linux-gnu)
command -v valgrind >/dev/null || { echo "monitor-order: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "monitor-order: needs root (a network namespace)" >&2; exit 1; }

ns="hr-order-$$"
work=$(mktemp -d /tmp/hr-order.XXXXXX)
receiver=""
cleanup() {
    [ -n "$receiver" ] && kill "$receiver" 2>/dev/null
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns"
ip -n "$ns" link add ha type veth peer name hb
ip -n "$ns" link set ha up
ip -n "$ns" link set hb up
# The agent, where Neutron's is (STATE_PATH/keepalived-state-change):
# answers every notification 200.
python3 - "$work/keepalived-state-change" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(64)
while True:
    c, _ = s.accept()
    c.recv(65536)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    c.close()
PY
receiver=$!

for target in "${targets[@]}"; do
    linker=()
    [[ $target == *-musl ]] && linker=(--config "target.$target.linker=\"rust-lld\"")
    # Symbols kept by a flag, not by the profile: the profile's settings
    # are part of every symbol's hash, flags are not, so these are the
    # names `make static` and `make release` link.
    CARGO_TARGET_DIR=target/order RUSTFLAGS="-C strip=none" cargo build --locked --release \
        --target "$target" "${linker[@]}"
    binary="target/order/$target/release/harouterd"
    out="$work/$target"
    mkdir -p "$out"
    # Once starting as backup, once as primary (the VIP already there):
    # each start takes its own paths through what follows it.
    for initial in backup primary; do
        rm -rf "$work/ha_confs/r0"
        mkdir -p "$work/ha_confs/r0"
        ip -n "$ns" addr flush dev ha
        [ "$initial" = primary ] && ip -n "$ns" addr add 169.254.0.1/24 dev ha
        valgrind --tool=callgrind --demangle=no --dump-before='*release_startup_memory*' \
            --callgrind-out-file="$out/cg.$initial" \
            "$binary" state-change --router_id r0 --namespace "$ns" --conf_dir "$work/ha_confs/r0" \
            --log-file "$work/log" --monitor_interface ha --monitor_cidr 169.254.0.1/24 \
            --pid_file "$work/r0.pid" --state_path "$work" --foreground \
            >"$out/valgrind.$initial.log" 2>&1 </dev/null &
        monitor=$!
        # Under valgrind start-up takes seconds: wait for the initial state.
        for _ in $(seq 100); do [ -s "$work/ha_confs/r0/state" ] && break; sleep 0.1; done
        sleep 1
        ip -n "$ns" addr flush dev ha
        for _ in $(seq 20); do
            ip -n "$ns" addr add 169.254.0.1/24 dev ha; sleep 0.2
            ip -n "$ns" addr del 169.254.0.1/24 dev ha; sleep 0.2
        done
        # And back to back, as a flapping VIP (and the benchmark) does:
        # changes while a notification is in flight, coalesced writes.
        for _ in $(seq 100); do
            echo "addr add 169.254.0.1/24 dev ha"
            echo "addr del 169.254.0.1/24 dev ha"
        done | ip -n "$ns" -force -batch -
        sleep 6 # the state file's quiet-time sync
        kill -TERM "$monitor"
        wait "$monitor" || true
    done
    # cg.INITIAL.1 is start-up (dumped before release_startup_memory);
    # cg.INITIAL is everything after. Names are defined once per file
    # ("fn=(12) NAME") and referred to by number after; recursion shows as
    # NAME'2.
    #
    # Added whatever the profile saw: every instance of what runs at moments
    # that depend on timing rather than on the path (a table or vector
    # growing, memory moved), found missing by recording the real monitors'
    # page faults (`perf record -e page-faults -d`) after the profile.
    nm --defined-only "$binary" | awk '{print $NF}' >"$out/symbols"
    python3 - "$out/symbols" "$out/cg.backup" "$out/cg.primary" >"packaging/order/$target.txt" <<'PY'
import re, sys
ALWAYS = re.compile(r"reserve_rehash|new_uninitialized|finish_grow|grow_one|do_reserve_and_handle|^mem(move|cpy|set|cmp)$")
seen = {name for name in open(sys.argv[1]).read().split() if ALWAYS.search(name)}
for path in sys.argv[2:]:
    names = {}
    for line in open(path):
        m = re.match(r"^c?fn=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
        if not m:
            continue
        if m.group(2):
            names[m.group(1)] = re.sub(r"'\d+$", "", m.group(2))
        name = names.get(m.group(1), "")
        if name and not name.startswith(("0x", "(")):
            seen.add(name)
print("\n".join(sorted(seen)))
PY
    echo "packaging/order/$target.txt: $(wc -l <"packaging/order/$target.txt") symbols"
done

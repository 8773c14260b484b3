#!/usr/bin/env bash
# Writes packaging/order/TARGET.txt (see build.rs): the symbols a running
# `state-change` monitor executes once its start-up is over, in a profile
# taken under callgrind: one monitor in a namespace of its own, its initial
# state reported, 20 VIP flips reported to an agent socket, the state file
# synced, SIGTERM. Everything before `release_startup_memory` (start-up,
# given back then) is left out.
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
# The agent: answers every notification 200.
python3 - "$work/agent.sock" <<'PY' &
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
    mkdir -p "$out" "$work/ha_confs/r0"
    rm -f "$work/state" "$work/ha_confs/r0/state"
    valgrind --tool=callgrind --demangle=no --dump-before='*release_startup_memory*' \
        --callgrind-out-file="$out/cg.out" \
        "$binary" state-change --router_id r0 --namespace "$ns" --conf_dir "$work/ha_confs/r0" \
        --log-file "$work/log" --monitor_interface ha --monitor_cidr 169.254.0.1/24 \
        --pid_file "$work/r0.pid" --state_path "$work" --foreground \
        >"$out/valgrind.log" 2>&1 </dev/null &
    monitor=$!
    # Under valgrind start-up takes seconds: wait for the initial state.
    for _ in $(seq 100); do [ -s "$work/ha_confs/r0/state" ] && break; sleep 0.1; done
    sleep 1
    for _ in $(seq 20); do
        ip -n "$ns" addr add 169.254.0.1/24 dev ha; sleep 0.2
        ip -n "$ns" addr del 169.254.0.1/24 dev ha; sleep 0.2
    done
    sleep 6 # the state file's quiet-time sync
    kill -TERM "$monitor"
    wait "$monitor" || true
    # cg.out.1 is start-up (dumped before release_startup_memory); cg.out
    # is everything after. Names are defined once ("fn=(12) NAME") and
    # referred to by number after; recursion shows as NAME'2.
    python3 - "$out/cg.out" >"packaging/order/$target.txt" <<'PY'
import re, sys
names, seen = {}, set()
for line in open(sys.argv[1]):
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

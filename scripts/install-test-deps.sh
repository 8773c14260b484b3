#!/usr/bin/env bash
# Installs what the test suite drives for real: keepalived (VRRP in network
# namespaces, `keepalived -t`), iproute2 (`ip netns`, veth) and conntrackd.
# Needs root; without it, tests that need root say so and are skipped
# (under CI=true they fail instead).
#
# With arguments, only those tools are checked (keepalived, ip, curl,
# python3, conntrackd), e.g. `install-test-deps.sh keepalived ip` (the demo).
set -euo pipefail

tools=("$@")
[ ${#tools[@]} -eq 0 ] && tools=(ip curl python3 keepalived conntrackd)
missing=()
for tool in "${tools[@]}"; do
    case "$tool" in
    ip) command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || missing+=(iproute2) ;;
    curl) command -v curl >/dev/null 2>&1 || missing+=(curl) ;;
    python3) [ -x /usr/bin/python3 ] || missing+=(python3) ;;
    keepalived | conntrackd)
        command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool") ;;
    *)
        echo "install-test-deps: unknown tool $tool" >&2
        exit 2
        ;;
    esac
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps: missing ${missing[*]} and not root: tests that need them will be skipped" >&2
    [ "${CI:-}" = "true" ] && exit 1
    exit 0
fi
echo "install-test-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

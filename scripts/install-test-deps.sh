#!/usr/bin/env bash
# Installs what the test suite drives for real: keepalived (VRRP in network
# namespaces, `keepalived -t`), iproute2 (`ip netns`, veth) and conntrackd.
# Needs root; without it, tests that need root say so and are skipped
# (under CI=true they fail instead).
set -euo pipefail

missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v curl >/dev/null 2>&1 || missing+=(curl)
[ -x /usr/bin/python3 ] || missing+=(python3)
for tool in keepalived conntrackd; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
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

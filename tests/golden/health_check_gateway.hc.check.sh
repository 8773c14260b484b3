#!/bin/bash -eu
ip a | grep 198.51.100.30 || exit 0
ping -c 1 -w 1 198.51.100.1 1>/dev/null || exit 1
ping6 -c 1 -w 1 2001:db8:3::1 1>/dev/null || exit 1
#!/usr/bin/env bash
# The namespace lab demo (root): install socksify and Debian's danted, and show the
# main job. Builds a throwaway lab of network namespaces (client zone, three danted
# SOCKS4 hops, a far web server the client cannot reach directly), runs
# `socksify -v curl` through all three hops, and cleans everything up. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" -ne 0 ]; then
    echo "demo: run as root (it creates network namespaces): sudo bash scripts/demo.sh" >&2
    exit 2
fi
if [ "${SOCKSIFY_DEMO_SKIP_INSTALL:-}" != 1 ]; then
    echo "== installing: dante-server, curl, iproute2, gcc (apt) and socksify (pip)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends gcc libc6-dev iproute2 \
        dante-server curl >/dev/null
    python3 -m pip install -q .
fi
exec python3 scripts/demo_lab.py

#!/usr/bin/env bash
# The README's first command: install socksify and show its main job on this machine,
# with nothing else installed and no root. Two throwaway socksify daemons act as the
# SOCKS hops (their front doors, policy "direct"), a local web server is the target,
# and `socksify -v` fetches a file through both hops, showing each connection's
# route. Everything it starts is stopped and removed at the end.
# (scripts/demo-lab.sh shows the same through Debian's danted in network namespaces.)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=python3
if [ "${SOCKSIFY_DEMO_SKIP_INSTALL:-}" != 1 ]; then
    echo "== installing socksify (pip install .; builds the C shim)"
    if ! python3 -m pip install -q . 2>/dev/null; then
        # Debian's own python3 refuses system-wide pip installs (PEP 668): use a venv.
        venv="${SOCKSIFY_DEMO_VENV:-$HOME/.cache/socksify-demo-venv}"
        python3 -m venv "$venv"
        "$venv/bin/python" -m pip install -q .
        PY="$venv/bin/python"
        export PATH="$venv/bin:$PATH"
    fi
fi
exec "$PY" scripts/demo_local.py

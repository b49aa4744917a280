#!/usr/bin/env bash
# Cross-build the Windows DLL (shim/common + shim/windows) with mingw-w64.
#   scripts/build-windows.sh [--wheel] [OUTDIR]     default: shim/build/windows
# Writes OUTDIR/socksify.dll (x86-64); with --wheel also the Windows wheel
# OUTDIR/socksify-VERSION-py3-none-win_amd64.whl that ships it (`pip install` it on
# Windows; pip fetches setuptools for the build). Needs gcc-mingw-w64-x86-64-win32
# (apt-get install --no-install-recommends gcc-mingw-w64-x86-64-win32).
# $MINGW_CC overrides the compiler. The sources also build with MSVC:
#   cl /LD /O2 /I shim /I shim\common /I shim\windows shim\common\wire.c
#      shim\common\addr.c shim\common\name.c shim\windows\*.c ws2_32.lib mswsock.lib bcrypt.lib
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
wheel=0
if [ "${1:-}" = "--wheel" ]; then
    wheel=1
    shift
fi
out="${1:-$root/shim/build/windows}"
cc="${MINGW_CC:-x86_64-w64-mingw32-gcc}"
if ! command -v "$cc" >/dev/null 2>&1; then
    echo "build-windows.sh: $cc not found (apt-get install gcc-mingw-w64-x86-64-win32)" >&2
    exit 1
fi
mkdir -p "$out"
# env.c is the Linux exec hooks' environment merging (LD_PRELOAD): not on Windows.
"$cc" -std=gnu11 -O2 -Wall -Wextra -Werror -D_WIN32_WINNT=0x0601 \
    -I"$root/shim/common" -I"$root/shim/windows" \
    "$root/shim/common/wire.c" "$root/shim/common/addr.c" "$root/shim/common/name.c" \
    "$root/shim/common/dcache.c" \
    "$root"/shim/windows/*.c \
    -shared -static-libgcc -Wl,--no-insert-timestamp \
    -o "$out/socksify.dll" -lws2_32 -lmswsock -lbcrypt
echo "$out/socksify.dll"
if [ "$wheel" = 1 ]; then
    # from a clean copy: a build/ left by a Linux install would put its .so in the wheel
    src="$(mktemp -d)"
    trap 'rm -rf "$src"' EXIT
    cp -r "$root/pyproject.toml" "$root/setup.py" "$root/MANIFEST.in" "$root/README.md" \
        "$root/daemon" "$src/"
    find "$src/daemon" \( -name __pycache__ -o -name _shim -o -name '*.egg-info' \) \
        -prune -exec rm -rf {} +
    # offline when this Python can build wheels itself (the Wine tests need that)
    isolation=()
    if python3 -c 'import setuptools.command.bdist_wheel' 2>/dev/null \
            || python3 -c 'import wheel.bdist_wheel' 2>/dev/null; then
        isolation=(--no-build-isolation)
    fi
    SOCKSIFY_TARGET=windows SOCKSIFY_WINDOWS_DLL="$out/socksify.dll" \
        python3 -m pip wheel -q --no-deps "${isolation[@]}" -w "$out" "$src" >&2
    ls "$out"/socksify-*-py3-none-win_amd64.whl
fi

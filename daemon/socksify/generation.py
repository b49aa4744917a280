"""The policy generation file: how the shims know their cached DIRECT answers still
hold without asking (docs/wire.md, "Caching").

16 bytes: the generation (8 bytes, big-endian, never 0 while the daemon serves), then
the daemon's pid (8 bytes, big-endian). The daemon writes a new random generation at
start and on every reload, and zeros when it stops; the file is rewritten in place
(never replaced), so a shim that mapped it sees every change. A shim trusts a cached
answer only while the generation equals the one that came with the answer and the pid
is alive, so a daemon that was killed without writing zeros is noticed as well.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
from pathlib import Path

log = logging.getLogger("socksify.generation")

SIZE = 16


class GenerationFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.value = 0

    def publish(self) -> int:
        """A new generation: every cached answer of every shim is void. None on
        Windows: the DLL caches nothing, and a 0 generation makes no answer
        cacheable."""
        if sys.platform == "win32":
            return 0
        self.value = secrets.randbits(63) | 1
        self._write(self.value, os.getpid())
        return self.value

    def withdraw(self) -> None:
        """Nothing may be cached any more (the daemon stops)."""
        if sys.platform == "win32":
            return
        self.value = 0
        self._write(0, 0)

    def _write(self, value: int, pid: int) -> None:
        data = pid.to_bytes(8, "big")
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                         0o644)
        except OSError as exc:
            log.warning("cannot write %s (%s): programs will ask for every direct "
                        "connection", self.path, exc)
            self.value = 0
            return
        try:
            os.ftruncate(fd, SIZE)
            # pid first, generation last: a reader that sees the new generation sees
            # the pid that goes with it
            os.pwrite(fd, data, 8)
            os.pwrite(fd, value.to_bytes(8, "big"), 0)
        finally:
            os.close(fd)

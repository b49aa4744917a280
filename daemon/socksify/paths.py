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
from pathlib import Path


class Paths:
    """The daemon's files. (A small class of its own, not a dataclass or a NamedTuple:
    `socksify CMD` imports this on its way to exec, and dataclasses and typing cost
    it milliseconds. Read-only, compared and hashed by its four paths.)"""

    __slots__ = ("runtime_dir", "socket", "pidfile", "logfile")
    runtime_dir: Path
    socket: Path
    pidfile: Path
    logfile: Path

    def __init__(self, runtime_dir: Path, socket: Path, pidfile: Path,
                 logfile: Path) -> None:
        for name, value in zip(self.__slots__, (runtime_dir, socket, pidfile, logfile)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Paths is read-only (cannot set {name})")

    def _key(self) -> tuple[Path, Path, Path, Path]:
        return (self.runtime_dir, self.socket, self.pidfile, self.logfile)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Paths) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return "Paths(" + ", ".join(f"{n}={v!r}" for n, v in
                                    zip(self.__slots__, self._key())) + ")"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Paths:
        env = dict(os.environ) if env is None else env
        if sys.platform == "win32":
            runtime = windows_runtime_dir(env)
            state = Path(env.get("SOCKSIFY_STATE_DIR") or runtime)
        elif env.get("SOCKSIFY_RUNTIME_DIR"):
            runtime = Path(env["SOCKSIFY_RUNTIME_DIR"])
            state = Path(env.get("SOCKSIFY_STATE_DIR") or runtime)
        else:
            if env.get("XDG_RUNTIME_DIR"):
                runtime = Path(env["XDG_RUNTIME_DIR"]) / "socksify"
            else:
                runtime = Path(f"/tmp/socksify-{os.getuid()}")
            state = Path(env.get("SOCKSIFY_STATE_DIR") or _state_home(env) / "socksify")
        sock = Path(env["SOCKSIFY_SOCKET"]) if env.get("SOCKSIFY_SOCKET") \
            else runtime / "control.sock"
        return cls(runtime, sock, runtime / "socksifyd.pid", state / "socksifyd.log")

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
        Nothing to check on Windows."""
        if sys.platform != "win32":
            check_private_dir(self.socket.parent)


class UnsafeRuntimeDir(PermissionError):
    """The control socket's directory is not safely ours; the message names it."""


# Modes a runtime directory may have: 0700, or 0711 for root's shared daemon (a root
# daemon whose policy has allow_users opens it to traversal, docs/wire.md). The shim
# applies the same rule (shim/linux/control.c, check_directory).
PRIVATE_MODE = 0o700
ROOT_SHARED_MODE = 0o711


def check_private_dir(path: Path) -> None:
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
    if env.get("SOCKSIFY_RUNTIME_DIR"):
        return Path(env["SOCKSIFY_RUNTIME_DIR"])
    base = env.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    return Path(base) / "socksify"


def _state_home(env: dict[str, str]) -> Path:
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"])
    return Path(env.get("HOME") or os.path.expanduser("~")) / ".local" / "state"


def config_candidates(env: dict[str, str] | None = None) -> list[Path]:
    """The policy files looked for, in order, when no -c FILE is given."""
    env = dict(os.environ) if env is None else env
    found = []
    if env.get("SOCKSIFY_CONFIG"):
        found.append(Path(env["SOCKSIFY_CONFIG"]))
    base = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else \
        Path(env.get("HOME") or os.path.expanduser("~")) / ".config"
    found.append(base / "socksify" / "socksify.toml")
    found.append(Path("/etc/socksify/socksify.toml"))
    return found

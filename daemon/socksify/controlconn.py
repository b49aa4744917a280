"""The control connection as `socksify CMD` makes it: the Unix control socket reached
and checked (its directory ours, the process answering ours or root's) and JSON objects
a line each way, with no more than the interpreter's built-in modules. The socket and
json modules bring enum and re, which were a third of the command's instructions on
its way to exec (docs/performance.md, "Start-up"); client.py, for the tools, builds its
connection here too, as a socket.socket.

The lines are docs/wire.md's control-socket JSON, unchanged: encode() writes what
json.dumps writes (ASCII, non-ASCII as \\u escapes), decode() is CPython's own C
scanner (the json module's), or json.loads where that is missing."""

from __future__ import annotations

import _socket
import os

from .paths import UnsafeRuntimeDir
from .peercred import peer_credentials

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, TypeVar

    from .paths import Paths

    S = TypeVar("S", bound=_socket.socket)

# One reply or event line at most this long: a daemon (or whoever answers) sending an
# endless line is refused, not buffered.
MAX_LINE = 1 << 20


class DaemonUnavailable(RuntimeError):
    pass


class UnsafeDaemon(RuntimeError):
    """The control socket is not safely ours: its directory is another user's (or open
    to others), or another user's process answers on it. Nothing was sent."""


def connect(paths: Paths, timeout: float = 5.0,
            make: Callable[[int, int], S] = _socket.socket) -> S:  # type: ignore[assignment]
    """A connection to the daemon's Unix control socket (Linux), checked before a byte
    is sent: the socket's directory must be ours (paths.check_socket_dir) and the
    process that accepted must run as our uid or root (check_peer). UnsafeDaemon
    otherwise. `make` builds the socket (client.py: socket.socket)."""
    try:
        paths.check_socket_dir()
    except FileNotFoundError:
        raise DaemonUnavailable(f"no daemon at {paths.socket_str}: no directory "
                                f"{os.path.dirname(paths.socket_str) or '.'}") from None
    except UnsafeRuntimeDir as exc:
        raise UnsafeDaemon(str(exc)) from None
    sock = make(_socket.AF_UNIX, _socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(paths.socket_str)
        check_peer(sock, paths.socket_str)
    except OSError as exc:
        sock.close()
        raise DaemonUnavailable(f"no daemon at {paths.socket_str}: "
                                f"{exc.strerror}") from None
    except UnsafeDaemon:
        sock.close()
        raise
    return sock


def check_peer(sock: _socket.socket, where: str) -> int:
    """The pid of the process serving this Unix socket, after checking that it runs as
    our own uid or as root (a root daemon serving the users of its allow_users):
    anyone else could be a fake daemon collecting the session's proxy passwords."""
    pid, uid = peer_credentials(sock)
    if uid not in (os.getuid(), 0):
        raise UnsafeDaemon(f"refusing the daemon at {where}: it runs as uid {uid}, not "
                           f"as you (uid {os.getuid()}) or root; another user's "
                           f"process answers there")
    return pid


def encode(obj: object) -> bytes:
    """One line: obj as JSON (dicts with string keys, lists, tuples, strings, ints,
    finite floats, bools, None), as json.dumps writes it, and a newline."""
    out: list[str] = []
    _encode(obj, out)
    out.append("\n")
    return "".join(out).encode("ascii")


def _encode(obj: object, out: list[str]) -> None:
    if obj is None:
        out.append("null")
    elif obj is True or obj is False:
        out.append("true" if obj else "false")
    elif isinstance(obj, str):
        out.append(_string(obj))
    elif isinstance(obj, int):
        out.append(int.__repr__(obj))
    elif isinstance(obj, float):
        if obj != obj or obj in (float("inf"), float("-inf")):
            raise ValueError(f"not a finite number: {obj!r}")
        out.append(float.__repr__(obj))
    elif isinstance(obj, dict):
        out.append("{")
        for i, (key, value) in enumerate(obj.items()):
            if not isinstance(key, str):
                raise TypeError(f"a key that is not a string: {key!r}")
            out.append(", " if i else "")
            out.append(_string(key))
            out.append(": ")
            _encode(value, out)
        out.append("}")
    elif isinstance(obj, (list, tuple)):
        out.append("[")
        for i, value in enumerate(obj):
            out.append(", " if i else "")
            _encode(value, out)
        out.append("]")
    else:
        raise TypeError(f"cannot send a {type(obj).__name__} to the daemon")


def _string(text: str) -> str:
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text:
        return f'"{text}"'           # the usual case: nothing to escape
    return '"' + "".join(_char(ch) for ch in text) + '"'


_SHORT = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
          "\t": "\\t"}


def _char(ch: str) -> str:
    if ch in _SHORT:
        return _SHORT[ch]
    code = ord(ch)
    if 0x20 <= code < 0x7F:
        return ch
    if code < 0x10000:              # a lone surrogate (argv's undecodable bytes) too
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 | code >> 10:04x}\\u{0xDC00 | code & 0x3FF:04x}"


class _Context:
    """What the json module's C scanner reads from its decoder: json.loads' defaults.
    (Types and a dict's method: class attributes that do not bind to the instance.)"""
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"NaN": float("nan"), "Infinity": float("inf"),
                      "-Infinity": float("-inf")}.__getitem__


def _scanner() -> Callable[[str, int], tuple[Any, int]] | None:
    try:
        from _json import make_scanner   # the json module's own C scanner
        scan: Callable[[str, int], tuple[Any, int]] = make_scanner(
            _Context())  # type: ignore[arg-type]  # (typeshed asks for a scanner)
        return scan
    except (ImportError, TypeError, AttributeError):
        return None


_SCAN = _scanner()


def decode(line: bytes) -> dict[str, Any]:
    """One line from the daemon: a JSON object. ValueError for anything else."""
    text = line.decode("utf-8").strip(" \t\r\n")
    if _SCAN is None:
        import json
        value = json.loads(text)
    else:
        try:
            value, end = _SCAN(text, 0)
        except StopIteration:
            raise ValueError(f"not JSON: {text[:80]!r}") from None
        if end != len(text):
            raise ValueError(f"not one JSON value: {text[:80]!r}")
    if not isinstance(value, dict):
        raise ValueError(f"not a JSON object: {text[:80]!r}")
    return value


class LineReader:
    """A socket's lines (recv, no makefile: that is the socket module's): readline()
    returns one line with its newline, b"" at the end. OSError as recv raises it;
    ValueError for a line over MAX_LINE."""

    def __init__(self, sock: _socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.ended = False

    def readline(self) -> bytes:
        while True:
            nl = self.buffer.find(b"\n")
            if nl >= 0:
                line, self.buffer = self.buffer[:nl + 1], self.buffer[nl + 1:]
                return line
            if self.ended:
                line, self.buffer = self.buffer, b""
                return line
            if len(self.buffer) > MAX_LINE:
                raise ValueError(f"a line from the daemon over {MAX_LINE} bytes")
            chunk = self.sock.recv(65536)
            if chunk:
                self.buffer += chunk
            else:
                self.ended = True

    def __iter__(self) -> LineReader:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


def read_message(reader: LineReader) -> dict[str, Any]:
    line = reader.readline()
    if not line:
        raise DaemonUnavailable("the daemon closed the control connection")
    return decode(line)

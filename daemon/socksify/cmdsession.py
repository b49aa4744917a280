"""The `socksify` command's session with the daemon: registered once, its connection
kept open (the daemon ends the session when it closes), the daemon's lines about the
command's connections printed, and the session registered again under the same id
after a daemon restart. (Linux: winlaunch.py keeps the Windows launcher's session.)

On the command's way to exec, so built on the interpreter's built-in modules: _thread,
not threading (4.4M instructions of start-up), and controlconn's bare socket and JSON
lines, not the socket and json modules (docs/performance.md, "Start-up")."""

from __future__ import annotations

import _socket
import _thread
import sys

# as in cli.py: typing is for the type checker only (start-up time)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

from . import controlconn
from .controlconn import LineReader
from .paths import Paths
from .printable import printable


class SessionRefused(RuntimeError):
    pass


REATTACH_INTERVAL = 0.5


class _Flag:
    """threading.Event's set, is_set and wait, on a _thread lock held until set (each
    flag here has one thread that sets it)."""

    def __init__(self) -> None:
        self._held = _thread.allocate_lock()
        self._held.acquire()
        self.value = False

    def set(self) -> None:
        if not self.value:
            self.value = True
            self._held.release()

    def is_set(self) -> bool:
        return self.value

    def wait(self, timeout: float) -> bool:
        """True once set; False if `timeout` seconds passed first."""
        if self._held.acquire(timeout=timeout):
            self._held.release()
        return self.value


class Session:
    """This command's session with the daemon: its chain or policy, and the daemon's
    lines about its connections. If the daemon goes away (a crash, a restart), the
    command's connections fail closed meanwhile, and the session is re-registered
    under the same id as soon as a daemon answers again, so the programs need no
    restart. In isolation, the namespace's sockets are handed to the new daemon
    (`reattached`); until then its connections are refused."""

    def __init__(self, paths: Paths, request: dict[str, Any], quiet: bool,
                 reattach: bool) -> None:
        self.paths = paths
        self.request = request
        self.quiet = quiet
        self.reattach = reattach
        self.done = _Flag()
        self.lock = _thread.allocate_lock()
        self.sock, self.stream, self.id = self._open(None)
        self.started = False
        self.ended = _Flag()     # the thread's end (join), set as it returns
        self.reattached: Callable[[], str | None] | None = None

    def _open(self, session_id: str | None
              ) -> tuple[_socket.socket, LineReader, str]:
        sock: _socket.socket = controlconn.connect(self.paths)
        try:
            stream = LineReader(sock)
            sock.sendall(controlconn.encode({**self.request, "session": session_id}))
            reply = controlconn.read_message(stream)
        except BaseException:   # e.g. a daemon stopping: one is started, then asked
            sock.close()
            raise
        if not reply.get("ok"):
            sock.close()
            raise SessionRefused(printable(reply.get("error")))
        sock.settimeout(None)
        return sock, stream, str(reply["session"])

    def start(self) -> None:
        """The thread printing the daemon's lines and reattaching (as a daemon thread:
        the command's end does not wait for it)."""
        self.started = True
        _thread.start_new_thread(self._run, ())

    def _run(self) -> None:
        try:
            self._keep()
        finally:
            self.ended.set()

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(f"socksify: {text}", file=sys.stderr, flush=True)

    def _keep(self) -> None:
        while True:
            try:
                _print_events(self.stream, self.quiet)
            except (OSError, ValueError):   # ValueError: an endless line
                pass
            if self.done.is_set() or not self.reattach:
                return
            self._say("the daemon went away: connections are refused until a daemon "
                      "is back (socksifyd start)")
            while not self.done.wait(REATTACH_INTERVAL):
                try:
                    opened = self._open(self.id)
                except (controlconn.DaemonUnavailable, controlconn.UnsafeDaemon,
                        SessionRefused, OSError, ValueError):
                    continue
                with self.lock:
                    if self.done.is_set():
                        opened[0].close()
                        return
                    self.sock, self.stream, _ = opened
                failed = self.reattached() if self.reattached else None
                if failed:
                    self._say(f"reattached, but its connections stay refused: {failed}")
                else:
                    self._say("reattached to the daemon; connections go through again")
                break
            else:
                return

    def close(self) -> None:
        """The command has ended: end the session (the daemon then closes)."""
        with self.lock:
            self.done.set()
            try:
                self.sock.shutdown(_socket.SHUT_WR)
            except OSError:
                pass
        if self.started:
            self.ended.wait(timeout=2.0)
        self.sock.close()


def _print_events(stream: LineReader, quiet: bool) -> None:
    """The daemon's lines about this command's connections and lookups (successes
    only with -v, which the daemon knows); nothing with -q (read, not decoded).
    Returns at EOF."""
    for line in stream:
        if quiet:
            continue
        try:
            event = controlconn.decode(line)
        except ValueError:
            continue
        if event.get("event") in ("connection", "lookup"):
            print(f"socksify: {printable(event.get('text'))}", file=sys.stderr,
                  flush=True)

"""The `socksify` command's session with the daemon: registered once, its connection
kept open (the daemon ends the session when it closes), the daemon's lines about the
command's connections printed, and the session registered again under the same id
after a daemon restart."""

from __future__ import annotations

import socket
import sys
import threading

# as in cli.py: typing is for the type checker only (start-up time)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable

from . import client
from .paths import Paths
from .printable import printable


class SessionRefused(RuntimeError):
    pass


REATTACH_INTERVAL = 0.5


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
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.sock, self.stream, self.id = self._open(None)
        self.thread = threading.Thread(target=self._keep, daemon=True)
        self.reattached: Callable[[], str | None] | None = None

    def _open(self, session_id: str | None) -> tuple[socket.socket, Any, str]:
        sock = client.connect(self.paths)
        try:
            stream = sock.makefile("rb")
            client.send(sock, {**self.request, "session": session_id})
            reply = client.read_message(stream)
        except BaseException:   # e.g. a daemon stopping: one is started, then asked
            sock.close()
            raise
        if not reply.get("ok"):
            sock.close()
            raise SessionRefused(printable(reply.get("error")))
        sock.settimeout(None)
        return sock, stream, str(reply["session"])

    def start(self) -> None:
        self.thread.start()

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(f"socksify: {text}", file=sys.stderr, flush=True)

    def _keep(self) -> None:
        while True:
            try:
                _print_events(self.stream, self.quiet)
            except OSError:
                pass
            if self.done.is_set() or not self.reattach:
                return
            self._say("the daemon went away: connections are refused until a daemon "
                      "is back (socksifyd start)")
            while not self.done.wait(REATTACH_INTERVAL):
                try:
                    opened = self._open(self.id)
                except (client.DaemonUnavailable, client.UnsafeDaemon, SessionRefused,
                        OSError, ValueError):
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
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if self.thread.is_alive():
            self.thread.join(timeout=2.0)
        self.sock.close()


def _print_events(stream: Any, quiet: bool) -> None:
    """The daemon's lines about this command's connections and lookups (successes
    only with -v, which the daemon knows); nothing with -q. Returns at EOF."""
    import json
    for line in stream:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") in ("connection", "lookup") and not quiet:
            print(f"socksify: {printable(event.get('text'))}", file=sys.stderr,
                  flush=True)

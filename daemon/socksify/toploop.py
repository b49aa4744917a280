"""`socksifyd top`: polls the daemon (connections and status) every interval while it
runs, and draws topview.frame() on the terminal's alternate screen. q or Ctrl+C
quits and gives the terminal back as it was; a daemon that stops answering is said so
on stderr, with exit status 1. --once prints one frame to stdout and exits (for
scripts and tests)."""

from __future__ import annotations

import os
import select
import sys
import time
from typing import Any, Callable

from rich.console import Console
from rich.live import Live

from . import client
from .paths import Paths
from .printable import printable
from .topview import frame
from .toprates import Meter, connections_request, filtered, reply_now

Poll = Callable[[], tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]]


class DaemonGone(RuntimeError):
    pass


def poller(paths: Paths, app: str | None, chain: str | None) -> Poll:
    """One poll: the status reply, the connections reply and its rows that pass the
    filters (sent to the daemon too: it may filter first)."""
    ask = connections_request(app, chain)

    def poll() -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
        try:
            status = client.request(paths, {"op": "status"}, timeout=3.0)
            reply = client.request(paths, ask, timeout=3.0)
        except (client.DaemonUnavailable, OSError, ValueError) as exc:
            raise DaemonGone(str(exc)) from None
        if not reply.get("ok"):
            raise DaemonGone(f"the daemon cannot list connections: "
                             f"{printable(reply.get('error'))}")
        return status, reply, filtered(reply.get("connections") or [], app, chain)
    return poll


def describe_filters(app: str | None, chain: str | None) -> str:
    bits = []
    if app is not None:
        bits.append(f"app {app}")
    if chain is not None:
        bits.append(f"chain {chain}")
    return f" ({', '.join(bits)})" if bits else ""


def once(poll: Poll, console: Console, filters: str) -> int:
    """One frame, printed (rates: over each connection's age)."""
    try:
        status, reply, conns = poll()
    except DaemonGone as exc:
        print(f"socksifyd: not running: {exc}", file=sys.stderr)
        return 3
    rates = Meter().update(reply_now(reply, time.monotonic()), conns)
    console.print(frame(status, conns, rates, console.width, console.height, filters))
    return 0


class Keys:
    """The terminal's keys one at a time, without echo (cbreak: Ctrl+C still raises
    KeyboardInterrupt); the terminal's modes restored on exit. On Windows the
    console's key buffer (msvcrt), which needs no mode change."""

    def __init__(self) -> None:
        self.fd = sys.stdin.fileno() if sys.stdin.isatty() else -1
        self.saved: Any = None

    def __enter__(self) -> Keys:
        if self.fd >= 0 and sys.platform != "win32":
            import termios
            import tty
            self.saved = termios.tcgetattr(self.fd)
            tty.setcbreak(self.fd)
        return self

    def __exit__(self, *_: object) -> None:
        if self.saved is not None and sys.platform != "win32":
            import termios
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)

    def wait(self, seconds: float) -> str:
        """The key pressed within `seconds`, or "" when none was."""
        if self.fd < 0:
            time.sleep(seconds)
            return ""
        if sys.platform == "win32":   # no select() on a console: poll its buffer
            import msvcrt
            deadline = time.monotonic() + seconds
            while not msvcrt.kbhit():
                if time.monotonic() >= deadline:
                    return ""
                time.sleep(0.05)
            return msvcrt.getwch()
        ready, _, _ = select.select([self.fd], [], [], max(0.0, seconds))
        if not ready:
            return ""
        data = os.read(self.fd, 32)
        return data.decode("latin-1") if data else "q"   # EOF: the terminal is gone


def live(poll: Poll, console: Console, interval: float, filters: str) -> int:
    """Draw, poll, redraw every `interval` seconds until q, Ctrl+C or the daemon
    going away."""
    meter = Meter()
    gone: str | None = None
    try:
        with Keys() as keys, Live(console=console, screen=True, auto_refresh=False,
                                  transient=True, redirect_stdout=False,
                                  redirect_stderr=False) as view:
            while True:
                try:
                    status, reply, conns = poll()
                except DaemonGone as exc:
                    gone = str(exc)
                    break
                rates = meter.update(reply_now(reply, time.monotonic()), conns)
                view.update(frame(status, conns, rates, console.width, console.height,
                                  filters), refresh=True)
                deadline = time.monotonic() + interval
                quit_ = False
                while not quit_ and (left := deadline - time.monotonic()) > 0:
                    quit_ = any(k in "qQ" for k in keys.wait(left))
                if quit_:
                    break
    except KeyboardInterrupt:
        pass
    if gone is not None:
        print(f"socksifyd top: the daemon stopped answering ({gone})", file=sys.stderr)
        return 1
    return 0


def main(paths: Paths, app: str | None, chain: str | None, interval: float,
         one: bool) -> int:
    poll = poller(paths, app, chain)
    filters = describe_filters(app, chain)
    if one:
        # the terminal's size; for a pipe $COLUMNS x $LINES, else 80 x 25
        return once(poll, Console(highlight=False, emoji=False), filters)
    if not (sys.stdout.isatty() and sys.stdin.isatty()):
        print("socksifyd top: needs a terminal (or --once for one frame)",
              file=sys.stderr)
        return 2
    if interval <= 0:
        print("socksifyd top: --interval must be positive", file=sys.stderr)
        return 2
    try:
        poll()   # a daemon that is not there at all: said before the screen changes
    except DaemonGone as exc:
        print(f"socksifyd: not running: {exc}", file=sys.stderr)
        return 3
    return live(poll, Console(highlight=False, emoji=False), interval, filters)

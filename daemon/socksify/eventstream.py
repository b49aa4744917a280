"""`socksifyd events`: follow the daemon's connection events (connect, close, refuse,
direct) over the control socket, one JSON object a line with --json, else a readable
line each. It ends on Ctrl+C, and when the daemon stops."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from . import client
from .paths import Paths
from .printable import printable


def follow(paths: Paths, as_json: bool) -> int:
    try:
        sock = client.connect(paths)
    except client.DaemonUnavailable as exc:
        print(f"socksifyd: not running ({exc})", file=sys.stderr)
        return 3
    try:
        with sock, sock.makefile("rb") as stream:
            client.send(sock, {"op": "events"})
            sock.settimeout(None)          # events come when they come
            reply = client.read_message(stream)
            if not reply.get("ok"):
                print("socksifyd: the daemon cannot stream events: "
                      f"{printable(reply.get('error'))}", file=sys.stderr)
                return 1
            for line in stream:
                event = json.loads(line)
                print(json.dumps(event) if as_json else event_line(event), flush=True)
    except KeyboardInterrupt:
        return 0
    except (client.DaemonUnavailable, OSError, ValueError):
        return 0                           # the daemon went away: the stream ends
    return 0


def event_line(e: dict[str, Any]) -> str:
    """One readable line per event, like the daemon's log line."""
    when = time.strftime("%H:%M:%S", time.localtime(float(e.get("time") or 0)))
    rule = f" [{e.get('rule')}{', chain ' + str(e['chain']) if e.get('chain') else ''}]" \
        if e.get("rule") else ""
    head = f"{when} {e.get('kind', '?'):<7} {e.get('id')} {e.get('app')}[{e.get('pid')}]" \
        f" -> {e.get('target')}{rule}"
    kind = e.get("kind")
    if kind == "connect":
        tail = f" via {e.get('route') or 'direct'} ({e.get('path')})"
    elif kind == "close":
        tail = f": {e.get('up', 0)} bytes up, {e.get('down', 0)} down in " \
               f"{e.get('age', 0)}s ({e.get('path')})"
    elif kind == "refuse":
        tail = f": {e.get('error')}"
    else:
        tail = ""
    return printable(head + tail)

"""Stream isolation for one connection: the SOCKS5 credentials its chain's `isolate`
mode gives it (chains/streamauth.py derives them), from what the daemon knows of the
program behind it."""

from __future__ import annotations

from ..chains import ChainSpec
from ..chains.streamauth import StreamAuth, derive, stream_key
from ..procinfo import start_time
from .records import Connection


def stream_auth(conn: Connection, chain: ChainSpec) -> StreamAuth | None:
    """None for a chain that does not isolate. A connection whose program is unknown
    (a front-door client not traced to a process: pid 0) cannot be put with others
    of its app or process: it is isolated per connection."""
    mode = chain.isolate
    if mode == "none":
        return None
    app = conn.app
    if app.pid <= 0:
        mode = "connection"
    start = start_time(app.pid) if mode == "process" else None
    key = stream_key(mode, chain.name, app.uid, app.pid, start, app.exe or app.name,
                     conn.id)
    return derive(key) if key is not None else None

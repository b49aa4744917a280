"""A connection's line: the daemon's log line about its decision and, for the
`socksify` command whose session it is, the same text as a JSON event line. The
router decides when (core/router.py: at once, or once the program has its answer);
this writes it."""

from __future__ import annotations

import json
import logging
from typing import Any

from .records import Connection, Session

log = logging.getLogger("socksify.daemon")


def write(conn: Connection, result: str, ok: bool, level: int, tell: bool,
          elapsed: float) -> None:
    """Log conn's line (app, target, route, result, rule, chain, how long it took,
    `elapsed` seconds) at level; with `tell` (tells(), asked by the caller), send its
    session the same text."""
    via = f" via {conn.route}" if conn.route else ""
    text = f"{conn.app} -> {conn.target}{via}: {result}"
    if conn.rule:
        rule = f" [{conn.rule}, chain {conn.chain}]" if conn.chain else f" [{conn.rule}]"
    else:
        rule = ""
    log.log(level, "[%s] %s%s (%.1f ms)", conn.id, text, rule, elapsed * 1000)
    if tell and conn.session is not None:
        _send(conn.session, {"event": "connection", "id": conn.id, "ok": ok,
                             "text": text})


def tells(session: Session | None, ok: bool) -> bool:
    """Whether a socksify command is told of a connection or lookup: failures always
    (it prints them unless -q, and then it is not sent them), successes when it
    asked for -v."""
    return session is not None and not session.quiet and (
        not ok or session.verbose) and not session.writer.is_closing()


def notify(session: Session | None, event: dict[str, Any]) -> None:
    """Tell a socksify command about one of its connections, if it is told (tells)."""
    if session is not None and tells(session, bool(event.get("ok"))):
        _send(session, event)


def _send(session: Session, event: dict[str, Any]) -> None:
    session.writer.write(json.dumps(event).encode() + b"\n")

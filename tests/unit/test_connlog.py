"""A connection's line (core/connlog.py, Router._event): held until the listener has
sent the program its answer when it asks for that (`after`), else written at once,
the same text either way; sent to the `socksify` command as an event line unless the
command is quiet (-q: it would print nothing, so nothing is sent)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
from typing import Any, Callable, cast

import pytest

from socksify.core.router import Router
from socksify.policy import Policy
from socksify.protocol import control as wire

PID, UID = os.getpid(), os.getuid()
POLICY = """\
[chains.c]
hops = ["socks5://127.0.0.1:9"]

[[rules]]
dest = ["198.51.100.0/24"]
action = "block"

[[rules]]
dest = ["192.0.2.0/24"]
action = "direct"

[default]
action = "chain:c"
"""


class Writer:
    """The socksify command's end of its session, as the router sees it."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.lines.append(json.loads(data))


def router() -> Router:
    r = Router()
    r.set_policy(Policy.parse(POLICY, "connlog-test.toml"))
    return r


def request(addr: str, session: bytes = bytes(wire.SESSION_SIZE)) -> wire.ConnectRequest:
    return wire.ConnectRequest(ipaddress.ip_address(addr), 80, wire.SockType.STREAM,
                               session)


def connect(r: Router, req: wire.ConnectRequest,
            after: list[Callable[[], None]] | None) -> wire.Reply:
    reply, _ = asyncio.run(r.connect(req, PID, UID, after=after))
    assert isinstance(reply, wire.Reply)
    return reply


def test_the_line_waits_for_the_answer_when_asked(caplog: pytest.LogCaptureFixture
                                                  ) -> None:
    r = router()
    after: list[Callable[[], None]] = []
    with caplog.at_level(logging.INFO, logger="socksify.daemon"):
        reply = connect(r, request("198.51.100.7"), after)
        assert reply.verdict is wire.Verdict.FAIL
        assert "198.51.100.7:80" not in caplog.text and len(after) == 1
        after[0]()                       # the listener, once the reply is sent
        held = [rec.getMessage() for rec in caplog.records]
        caplog.clear()
        connect(r, request("198.51.100.7"), None)          # at once
        now = [rec.getMessage() for rec in caplog.records]
    assert len(held) == 1 and len(now) == 1
    # the same text, but for the connection's id and its time
    strip = [m.split("] ", 1)[1].rsplit(" (", 1)[0] for m in (held[0], now[0])]
    assert strip[0] == strip[1] and "Permission denied: blocked" in strip[0]


@pytest.mark.parametrize("quiet,verbose,expect", [
    (False, False, ["refused"]), (True, False, []), (False, True, ["direct", "refused"]),
    (True, True, ["direct", "refused"])])   # -q -v is a usage error; -v wins here
def test_event_lines_go_only_to_a_command_that_prints_them(quiet: bool, verbose: bool,
                                                             expect: list[str]) -> None:
    r = router()
    writer = Writer()
    session = r.sessions.start({"config": None, "quiet": quiet, "verbose": verbose},
                               cast(asyncio.StreamWriter, writer), PID, UID, r.policy)
    after: list[Callable[[], None]] = []
    connect(r, request("192.0.2.7", session.id), after)
    connect(r, request("198.51.100.7", session.id), after)
    assert writer.lines == []            # held with the log line
    for write in after:
        write()
    got = ["refused" if not line["ok"] else "direct" for line in writer.lines]
    assert got == expect, writer.lines

"""A connection's log line waits for the shim's reply (core/afterreply.py): the
control listener opens an AfterReply per request and runs it right after the send;
without one (the SOCKS front door) the line is written at once, as before."""

from __future__ import annotations

import asyncio
import logging

import pytest

from socksify.core.afterreply import PENDING, AfterReply, after_reply
from test_router import connect, router


def test_the_log_line_is_written_after_the_reply(caplog: pytest.LogCaptureFixture
                                                 ) -> None:
    async def main() -> tuple[str, str]:
        later = AfterReply()
        token = PENDING.set(later)
        try:
            reply = await connect(router(), "192.0.2.7")     # a direct rule
        finally:
            PENDING.reset(token)
        assert reply is not None
        before = caplog.text
        later.run()
        return before, caplog.text

    with caplog.at_level(logging.INFO, logger="socksify"):
        before, after = asyncio.run(main())
    assert "192.0.2.7:80" not in before
    assert "192.0.2.7:80" in after and ": direct" in after


def test_without_a_pending_reply_the_line_is_written_at_once(
        caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> str:
        await connect(router(), "192.0.2.8")
        return caplog.text

    with caplog.at_level(logging.INFO, logger="socksify"):
        assert "192.0.2.8:80" in asyncio.run(main())


def test_a_job_added_after_the_reply_runs_at_once() -> None:
    """A task started during a request inherits its context (and so its AfterReply):
    whatever it adds once the reply is out must not be held for ever."""
    done: list[str] = []

    async def main() -> None:
        later = AfterReply()
        token = PENDING.set(later)
        go = asyncio.Event()

        async def straggler() -> None:
            await go.wait()
            after_reply(lambda: done.append("late"))

        task = asyncio.ensure_future(straggler())
        after_reply(lambda: done.append("held"))
        PENDING.reset(token)
        assert done == []
        later.run()
        assert done == ["held"]
        go.set()
        await task

    asyncio.run(main())
    assert done == ["held", "late"]

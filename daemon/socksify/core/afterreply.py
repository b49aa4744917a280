"""Work that may wait until a shim's reply is sent: a connection's log line.

A program's connect() returns when the daemon's reply (READY, SWAP, DIRECT, FAIL)
reaches it, so what the daemon does between deciding and replying is latency the
program sees. The control listener opens an AfterReply for each shim request it
answers; whatever the router wants done "after the reply" runs right after the send,
in the same step of the same task (no event-loop turn in between: the line is in the
log as soon as it was before, give or take the send). Outside a request (the SOCKS
front door, a task started during one and still running after it) the work runs at
once, as before.
"""

from __future__ import annotations

import contextvars
from typing import Callable

Job = Callable[[], None]


class AfterReply:
    """Jobs held until run(); once run, a job added later runs at once."""

    __slots__ = ("jobs", "open")

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.open = True

    def add(self, job: Job) -> None:
        if self.open:
            self.jobs.append(job)
        else:
            job()

    def run(self) -> None:
        self.open = False
        jobs, self.jobs = self.jobs, []
        for job in jobs:
            job()


PENDING: contextvars.ContextVar[AfterReply | None] = contextvars.ContextVar(
    "socksify_after_reply", default=None)


def after_reply(job: Job) -> None:
    """Run job once the current shim request's reply is sent (at once if none)."""
    pending = PENDING.get()
    if pending is None:
        job()
    else:
        pending.add(job)

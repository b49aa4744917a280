"""Connection events for `socksifyd events`: connect, close, refuse (and direct, for a
connection the program makes itself), the facts of the daemon's log lines as JSON
objects, fanned out to the subscribers that may see them. Nothing is built while
nobody subscribes, so a connect costs nothing more then."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from .records import Connection

QUEUE_SIZE = 4096        # events a slow subscriber may lag behind before losing some


@dataclass(eq=False)
class Subscriber:
    uid: int | None          # None: sees every user's connections
    queue: asyncio.Queue[dict[str, Any] | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    lost: int = 0            # events dropped because the queue was full


class Events:
    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()

    def subscribe(self, uid: int | None) -> Subscriber:
        sub = Subscriber(uid)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)

    def close(self) -> None:
        """The daemon stops: each subscriber's stream ends (None)."""
        for sub in self.subscribers:
            try:
                sub.queue.put_nowait(None)
            except asyncio.QueueFull:
                sub.queue.get_nowait()
                sub.queue.put_nowait(None)

    def emit(self, kind: str, conn: Connection, **extra: Any) -> None:
        """One event about conn to every subscriber allowed to see it."""
        if not self.subscribers:
            return
        event = record(kind, conn, **extra)
        for sub in self.subscribers:
            if sub.uid is not None and sub.uid != conn.app.uid:
                continue
            try:
                sub.queue.put_nowait(event)
            except asyncio.QueueFull:
                sub.lost += 1


def record(kind: str, conn: Connection, **extra: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "kind": kind, "time": round(time.time(), 3), "id": conn.id,
        "app": conn.app.name, "pid": conn.app.pid, "user": conn.app.user,
        "uid": conn.app.uid, "target": conn.target, "host": conn.host,
        "rule": conn.rule, "chain": conn.chain, "route": conn.route,
        "hops": list(conn.hops), "path": conn.path}
    if kind == "close":
        event.update(up=conn.counters.up, down=conn.counters.down,
                     age=round(time.monotonic() - conn.started, 1))
    event.update(extra)
    return event

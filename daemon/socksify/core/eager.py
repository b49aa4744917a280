"""Running a request's coroutine eagerly: its first step now, in the caller's
callback, and a Task only if it has to wait.

Most shim requests never wait (DIRECT, a block or refusal, RESOLVE, NAMEOF): a Task
per request would cost a Task, a loop iteration to start it and one to see it done.
`run()` steps the coroutine at once (`coro.send(None)`); if it returns, its answer is
handed to `finish` right there. If it yields (a future it awaits, or a bare yield),
the rest goes to a Task that resumes it exactly where it stopped: the Task sees the
very future the coroutine yielded, so its wake-up, cancellation (the future
cancelled, CancelledError thrown in) and any exception reach the coroutine as if it
had been the Task's own from the start (`yield from`, with the first step done).

A chain runs eagerly too, up to its first wait (hop 1's reply): the Task is made
while the hop works on the request, not between the decision and hop 1's connect.
Code that needs a current Task (asyncio.timeout(), asyncio.current_task()) must not
run in the eager step, where there is none: it awaits `in_task()` first, which
yields once when there is no current Task (so the rest runs in the Task) and is free
inside one; sockstream.within() needs none (it falls back to asyncio.wait_for). This
module needs a running loop and nothing else; Python 3.12's eager tasks do the same
with a Task made up front.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Coroutine, Generator, Generic, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T], finish: Callable[[T | None, BaseException | None],
                                                       None]
        ) -> asyncio.Task[None] | None:
    """Step coro now; call finish(result, None) or finish(None, exc) when it ends.
    None if it ended within this call (finish was called already); else the Task
    that carries the rest (finish is called inside it, before it completes; the Task
    ends cancelled if the coroutine ended with CancelledError). Called from a
    callback, outside any Task (in_task() relies on it)."""
    if asyncio.current_task() is not None:
        coro.close()
        raise RuntimeError("eager.run() inside a Task")
    try:
        first = coro.send(None)
    except StopIteration as stop:
        finish(stop.value, None)
        return None
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:      # CancelledError included: the coroutine's own
        finish(None, exc)
        return None
    return asyncio.get_running_loop().create_task(_drive(coro, first, finish))


async def _drive(coro: Coroutine[Any, Any, T], first: Any,
                 finish: Callable[[T | None, BaseException | None], None]) -> None:
    try:
        result = await _Resumed(coro, first)
    except (KeyboardInterrupt, SystemExit):
        raise
    except asyncio.CancelledError as exc:
        finish(None, exc)
        raise
    except BaseException as exc:
        finish(None, exc)
        return
    finish(result, None)


class _Resumed(Generic[T]):
    """Awaiting this goes on with a started coroutine: what it yields is yielded to
    the Task, what the Task sends or throws goes to it (as `yield from` would)."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Coroutine[Any, Any, T], first: Any) -> None:
        self.coro = coro
        self.first = first

    def __await__(self) -> Generator[Any, Any, T]:
        coro = self.coro
        try:
            if self.first is None:
                # a bare yield (in_task(), asyncio.sleep(0)): this Task's first step
                # is already a later loop iteration, so go on at once
                pending = coro.send(None)
            else:
                pending = self.first
            while True:
                try:
                    sent = yield pending
                except GeneratorExit:
                    coro.close()
                    raise
                except BaseException as exc:   # thrown in by the Task: cancellation
                    pending = coro.throw(exc)
                else:
                    pending = coro.send(sent)
        except StopIteration as stop:
            result: T = stop.value
            return result


class _InTask:
    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        if asyncio.current_task() is None:
            yield None     # run() takes this as "go on in a Task"


_IN_TASK = _InTask()


def in_task() -> _InTask:
    """`await in_task()` before code that needs a current Task: in run()'s eager
    step, the rest goes to a Task; inside a Task already, nothing happens."""
    return _IN_TASK

"""core/eager.py: a request's coroutine stepped at once, a Task only when it waits.
A coroutine that returns or raises without waiting is finished within run() (no
Task); one that waits goes on in a Task that sees the future it yielded, its result,
its exception and its cancellation exactly as a Task of its own would; in_task()
moves what needs a current Task (asyncio.timeout) into that Task."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest

from socksify.core import eager


async def run(coro: Any, finish: Finished) -> asyncio.Task[None] | None:
    """await run() as the control listener calls it: from a reader callback, with no
    current Task."""
    loop = asyncio.get_running_loop()
    got: asyncio.Future[asyncio.Task[None] | None] = loop.create_future()
    loop.call_soon(lambda: got.set_result(eager.run(coro, finish)))
    return await got


class Finished:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, BaseException | None]] = []
        self.tasks: list[asyncio.Task[Any] | None] = []

    def __call__(self, result: Any, exc: BaseException | None) -> None:
        self.calls.append((result, exc))
        self.tasks.append(asyncio.current_task())


def test_a_coroutine_that_does_not_wait_finishes_at_once() -> None:
    async def main() -> None:
        async def answer() -> str:
            return "direct"
        done = Finished()
        assert await run(answer(), done) is None
        assert done.calls == [("direct", None)]
        assert done.tasks == [None]        # no Task was made for it
    asyncio.run(main())


def test_one_that_raises_at_once_hands_the_exception_on() -> None:
    async def main() -> None:
        async def answer() -> str:
            raise OSError(32, "broken pipe")
        done = Finished()
        assert await run(answer(), done) is None
        assert len(done.calls) == 1 and isinstance(done.calls[0][1], OSError)
        assert done.calls[0][0] is None
    asyncio.run(main())


def test_one_that_waits_goes_on_in_a_task_with_the_future_it_awaited() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        seen: list[object] = []

        async def answer() -> int:
            seen.append(asyncio.current_task())
            value = await fut              # the Task must wait on this very future
            seen.append(asyncio.current_task())
            await asyncio.sleep(0)         # a bare yield inside the Task
            return value + 1
        done = Finished()
        task = await run(answer(), done)
        assert task is not None and done.calls == []
        assert seen == [None]
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert done.calls == [] and not task.done()     # still waiting on fut
        fut.set_result(41)
        await task
        assert done.calls == [(42, None)]
        assert seen[1] is task and done.tasks == [task]   # finished inside the Task
    asyncio.run(main())


def test_an_exception_after_waiting_reaches_the_coroutine_and_finish() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int] = loop.create_future()
        caught: list[BaseException] = []

        async def answer() -> int:
            try:
                return await fut
            except ConnectionRefusedError as exc:
                caught.append(exc)
                raise TimeoutError("hop 1") from exc
        done = Finished()
        task = await run(answer(), done)
        assert task is not None
        fut.set_exception(ConnectionRefusedError())
        await task                          # the Task itself ends cleanly
        assert len(caught) == 1
        assert isinstance(done.calls[0][1], TimeoutError)
    asyncio.run(main())


def test_cancellation_at_stop_reaches_the_coroutine() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        cleaned: list[str] = []

        async def answer() -> None:
            try:
                await fut
            finally:
                cleaned.append("finally")
        done = Finished()
        task = await run(answer(), done)
        assert task is not None
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert fut.cancelled()              # the future it waited on, as a Task does
        assert cleaned == ["finally"]
        assert isinstance(done.calls[0][1], asyncio.CancelledError)
        assert task.cancelled()
    asyncio.run(main())


def test_a_coroutine_may_swallow_the_cancellation_and_answer() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()

        async def answer() -> str:
            try:
                await fut
            except asyncio.CancelledError:
                return "refused"
            return "ready"
        done = Finished()
        task = await run(answer(), done)
        assert task is not None
        await asyncio.sleep(0)
        task.cancel()
        await task
        assert done.calls == [("refused", None)]
    asyncio.run(main())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is 3.11's")
def test_in_task_moves_timeouts_into_the_task() -> None:
    async def main() -> None:
        async def needs_a_task() -> str:
            await eager.in_task()
            async with asyncio.timeout(5):      # raises outside a Task
                await asyncio.sleep(0)
            return "chain"

        async def plain() -> str:
            async with asyncio.timeout(5):
                await asyncio.sleep(0)
            return "chain"
        done = Finished()
        task = await run(needs_a_task(), done)
        assert task is not None
        await task
        assert done.calls == [("chain", None)]
        failed = Finished()                      # what in_task() is there for
        assert await run(plain(), failed) is None
        assert isinstance(failed.calls[0][1], RuntimeError)
        # inside a Task already, in_task() does not yield; run() is not for Tasks
        assert await needs_a_task() == "chain"
        with pytest.raises(RuntimeError):
            eager.run(needs_a_task(), done)
    asyncio.run(main())

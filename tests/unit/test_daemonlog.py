"""The daemon's log lines (daemonlog.py): the standard text, made cheaper, written
once per turn of the event loop."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import pytest

from socksify import daemonlog


def _record(msg: str, args: tuple[object, ...] = (), created: float | None = None,
            exc: bool = False) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("socksify.router", logging.WARNING, "", 0, msg, args,
                               exc_info)
    if created is not None:
        record.created = created
        record.msecs = int((created - int(created)) * 1000) + 0.0
    return record


@pytest.mark.parametrize("created", [1_700_000_000.0, 1_700_000_000.999,
                                     1_700_000_001.5, 1_700_003_600.042])
def test_line_is_the_standard_text(created: float) -> None:
    ours, theirs = daemonlog.LineFormatter(), logging.Formatter(daemonlog.FORMAT)
    for msg, args in (("[%s] %s -> %s (%.1f ms)", ("c7", "curl[12]", "10.0.0.1:80", 1.25)),
                      ("no arguments, a %s left as it is", ()),
                      ("ünïcode %d", (3,))):
        assert ours.format(_record(msg, args, created)) \
            == theirs.format(_record(msg, args, created))


def test_the_time_text_follows_the_second() -> None:
    fmt = daemonlog.LineFormatter()
    first = fmt.format(_record("x", (), 1_700_000_000.5))
    later = fmt.format(_record("x", (), 1_700_000_001.25))
    assert first.split(" ")[1] != later.split(" ")[1]
    assert later == logging.Formatter(daemonlog.FORMAT).format(
        _record("x", (), 1_700_000_001.25))


def test_an_exception_goes_the_standard_way() -> None:
    line = daemonlog.LineFormatter().format(_record("failed: %s", ("it",), exc=True))
    assert "failed: it\nTraceback (most recent call last):" in line
    assert line.rstrip().endswith("ValueError: boom")


def _handler(path: Path) -> tuple[daemonlog.TurnHandler, logging.Logger]:
    handler = daemonlog.TurnHandler(open(path, "w", buffering=1 << 16))
    handler.setFormatter(daemonlog.LineFormatter())
    log = logging.getLogger(f"socksify.test.{path.name}")
    log.propagate = False
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    return handler, log


def test_outside_a_loop_a_line_is_written_at_once(tmp_path: Path) -> None:
    handler, log = _handler(tmp_path / "a.log")
    try:
        log.info("[c1] one")
        assert (tmp_path / "a.log").read_text().endswith(" INFO socksify.test.a.log: "
                                                         "[c1] one\n")
    finally:
        log.removeHandler(handler)
        handler.close()


def test_in_a_loop_lines_wait_for_the_end_of_the_turn(tmp_path: Path) -> None:
    path = tmp_path / "b.log"
    handler, log = _handler(path)
    seen: list[str] = []

    async def batch() -> None:
        for i in range(5):
            log.info("[c%d] connected", i)
        seen.append(path.read_text())          # the same turn: nothing written yet
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        seen.append(path.read_text())

    try:
        asyncio.run(batch())
        assert seen[0] == ""
        assert [line.split(": ", 1)[1] for line in seen[1].splitlines()] \
            == [f"[c{i}] connected" for i in range(5)]
    finally:
        log.removeHandler(handler)
        handler.close()


def test_flush_writes_what_waits_when_the_loop_is_gone(tmp_path: Path) -> None:
    """A loop stopped in the turn that logged never runs the turn's end: what waits
    is written by daemonlog.flush() (service.py calls it after the loop)."""
    path = tmp_path / "c.log"
    handler, log = _handler(path)
    root = logging.getLogger()
    root.addHandler(handler)
    loop = asyncio.new_event_loop()

    def last_words() -> None:
        log.info("stopping")
        loop.stop()

    try:
        loop.call_soon(last_words)
        loop.run_forever()
        loop.close()
        assert path.read_text() == ""
        daemonlog.flush()
        assert path.read_text().endswith("stopping\n")
    finally:
        root.removeHandler(handler)
        log.removeHandler(handler)
        handler.close()

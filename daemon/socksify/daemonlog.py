"""The daemon's log: set up once by `socksifyd run`. It writes a line per connection
decision and per close, so a line's own cost counts (docs/performance.md,
"2026-12-03 (night)": the two lines of a handed-off connection were about half of
the daemon's Python per connect). Two things made them dearer than they need be:

- the standard library's Formatter makes the time text anew for every line
  (localtime and strftime) and goes through its general path (usesTime, a
  formatMessage and a %-template per line);
- stderr is line-buffered: a write() per line, where the lane's records come in
  batches (a line each, from one callback).

The text is the same as logging.basicConfig(format=FORMAT) writes, to the same
descriptor."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import TextIO

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class LineFormatter(logging.Formatter):
    """FORMAT, with the time text made once per second and the line by one f-string;
    a record with an exception or a stack goes the standard way."""

    def __init__(self) -> None:
        super().__init__(FORMAT)
        self._second = -1
        self._stamp = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:
            self._stamp = time.strftime(self.default_time_format,
                                        self.converter(record.created))
            self._second = second
        return f"{self._stamp},{int(record.msecs):03d}"   # default_msec_format

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        record.message = record.getMessage()
        record.asctime = self.formatTime(record)
        return f"{record.asctime} {record.levelname} {record.name}: {record.message}"


class TurnHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler whose lines wait in its buffer until the end of the event
    loop's turn that logged them (one write() for a batch), and are written at once
    when logged outside a running loop (before it starts, after it ends, from
    another thread). A daemon killed outright loses at most one turn's lines."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._due = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + self.terminator)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)
            return
        if self._due:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._due = True
        loop.call_soon(self._turn_over)

    def _turn_over(self) -> None:
        self._due = False
        self.flush()


def _buffered_stderr() -> TextIO | None:
    """stderr's descriptor with a buffer of its own (None: no descriptor)."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return open(fd, "w", buffering=1 << 16, encoding=sys.stderr.encoding or "utf-8",
                errors="backslashreplace", closefd=False)


def setup(level: int) -> None:
    """The root logger at level, to stderr (the log file `socksifyd start` opens, or
    the journal), in FORMAT. None of the caller, thread or process is collected for a
    line: the format shows none of them (the logging documentation's
    "Optimization")."""
    stream = _buffered_stderr()
    handler = TurnHandler(stream) if stream is not None else logging.StreamHandler()
    handler.setFormatter(LineFormatter())
    logging.basicConfig(level=level, handlers=[handler])   # as before: none if set up
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False


def flush() -> None:
    """Write out what waits (the loop's last turn: asyncio.run drops its callbacks)."""
    for handler in logging.getLogger().handlers:
        handler.flush()

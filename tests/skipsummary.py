"""The skipped tests, one line per reason (tests/conftest.py prints it at the end of a
run): without root most of the suite skips for one reason or two, and a line per test
would bury the result."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable


def fold(skips: Iterable[tuple[str, str]]) -> list[str]:
    """Lines "N tests (in FILES): REASON" for (nodeid, reason) pairs, one per reason,
    the largest group first; up to three files are named, then "..."."""
    groups: dict[str, list[str]] = defaultdict(list)
    for nodeid, reason in skips:
        groups[reason].append(nodeid.split("::")[0])
    lines = []
    for reason, files in sorted(groups.items(), key=lambda g: (-len(g[1]), g[0])):
        names = sorted(set(files))
        where = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        count = f"{len(files)} test" + ("s" if len(files) != 1 else "")
        lines.append(f"{count} (in {where}): {reason}")
    return lines


def reason_of(longrepr: object) -> str:
    """The reason of a skipped test's report (its longrepr is (path, line, reason))."""
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        text = str(longrepr[2])
    else:
        text = str(longrepr)
    return text[len("Skipped: "):] if text.startswith("Skipped: ") else text

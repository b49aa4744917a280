"""Hop health: which hops were found dead lately, shared by every connection."""

from __future__ import annotations

import time

from ..proxies import Proxy


class HopHealth:
    """Which hops were found dead lately; shared by every connection of the daemon so
    one failure spares the next connections the wait. A dead hop is skipped for a
    back-off period that doubles on each repeated failure (up to max_backoff)."""

    def __init__(self, backoff: float = 5.0, max_backoff: float = 120.0) -> None:
        self._backoff = backoff
        self._max = max_backoff
        self._down: dict[tuple[str, int], tuple[float, float]] = {}  # until, period

    def is_down(self, hop: Proxy) -> bool:
        entry = self._down.get((hop.host, hop.port))
        return entry is not None and time.monotonic() < entry[0]

    def retry_in(self, hop: Proxy) -> float | None:
        """Seconds until a hop that is down is tried again; None if it is up."""
        entry = self._down.get((hop.host, hop.port))
        if entry is None or entry[0] <= time.monotonic():
            return None
        return round(entry[0] - time.monotonic(), 1)

    def mark_down(self, hop: Proxy) -> None:
        key = (hop.host, hop.port)
        prev = self._down.get(key)
        period = min(prev[1] * 2, self._max) if prev else self._backoff
        self._down[key] = (time.monotonic() + period, period)

    def mark_up(self, hop: Proxy) -> None:
        self._down.pop((hop.host, hop.port), None)

    def snapshot(self) -> dict[str, float]:
        """Hop address -> seconds until it is tried again, for hops now down."""
        now = time.monotonic()
        return {f"{h}:{p}": round(until - now, 1)
                for (h, p), (until, _) in self._down.items() if until > now}

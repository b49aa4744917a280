"""The numbers `socksifyd top` and `socksifyd connections` show beyond the daemon's
own: which rows a filter keeps, each connection's rate from two successive polls (the
reply's "now", the daemon's monotonic clock), and the totals and rates per app and per
chain. Pure functions of the daemon's replies; rows are read defensively (an older
daemon sends fewer keys)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence


def app_name(c: dict[str, Any]) -> str:
    return str(c.get("app") or "?")


def chain_name(c: dict[str, Any]) -> str:
    return str(c.get("chain") or "direct")


def keep(c: dict[str, Any], app: str | None, chain: str | None) -> bool:
    """Does row c pass `--app NAME` / `--chain NAME` (exact names; None: any)? Rows
    with no chain are the "direct" chain's."""
    return (app is None or app_name(c) == app) and \
        (chain is None or chain_name(c) == chain)


def filtered(conns: Iterable[dict[str, Any]], app: str | None,
             chain: str | None) -> list[dict[str, Any]]:
    """The rows that pass the filters (the daemon filters too when it can; a daemon
    that does not know the request's "app"/"chain" keys sends every row)."""
    return [c for c in conns if isinstance(c, dict) and keep(c, app, chain)]


def connections_request(app: str | None, chain: str | None) -> dict[str, Any]:
    """The connections request with the filters the daemon can apply: "app", and
    "chain" unless it is "direct" (the daemon's rows name no chain for those; they
    are filtered here)."""
    ask: dict[str, Any] = {"op": "connections"}
    if app is not None:
        ask["app"] = app
    if chain is not None and chain != "direct":
        ask["chain"] = chain
    return ask


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) \
        and value >= 0 else 0


def _seconds(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


@dataclass
class Rate:
    up: float = 0.0       # bytes per second
    down: float = 0.0

    @property
    def total(self) -> float:
        return self.up + self.down


@dataclass
class Meter:
    """Rates from successive polls: a connection's rate is its byte counts' growth
    over the daemon's clock between two polls. One seen for the first time is rated
    over its age (its bytes since it began), and an unknown age gives no rate yet."""
    last: dict[str, tuple[float, int, int]] = field(default_factory=dict)

    def update(self, now: float, conns: Sequence[dict[str, Any]]) -> dict[str, Rate]:
        rates: dict[str, Rate] = {}
        seen: dict[str, tuple[float, int, int]] = {}
        for c in conns:
            cid = str(c.get("id", ""))
            if not cid:
                continue
            up, down = _count(c.get("up")), _count(c.get("down"))
            seen[cid] = (now, up, down)
            before = self.last.get(cid)
            if before is not None and now > before[0]:
                dt = now - before[0]
                rates[cid] = Rate(max(0, up - before[1]) / dt,
                                  max(0, down - before[2]) / dt)
                continue
            age = _seconds(c.get("age"))
            if before is None and age is not None and age > 0:
                rates[cid] = Rate(up / age, down / age)
        self.last = seen   # closed connections are forgotten
        return rates


@dataclass
class Total:
    name: str
    count: int = 0
    up: int = 0
    down: int = 0
    rate: Rate = field(default_factory=Rate)


def totals(conns: Sequence[dict[str, Any]], rates: dict[str, Rate],
           key: str) -> list[Total]:
    """Per app (key "app") or per chain (key "chain"): connections, bytes and rate,
    the busiest first (by rate, then bytes), then by name."""
    name_of = app_name if key == "app" else chain_name
    out: dict[str, Total] = {}
    for c in conns:
        name = name_of(c)
        t = out.setdefault(name, Total(name))
        t.count += 1
        t.up += _count(c.get("up"))
        t.down += _count(c.get("down"))
        r = rates.get(str(c.get("id", "")))
        if r is not None:
            t.rate.up += r.up
            t.rate.down += r.down
    return sorted(out.values(), key=lambda t: (-t.rate.total, -(t.up + t.down), t.name))


def reply_now(reply: dict[str, Any], fallback: float) -> float:
    """The daemon's clock from a connections reply ("now"), else the caller's own
    monotonic clock (an older daemon): rates are then measured between our polls."""
    now = _seconds(reply.get("now"))
    return fallback if now is None else now

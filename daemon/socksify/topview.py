"""One frame of `socksifyd top`, laid out for a terminal of a given size: a header line,
the connections (as many rows as fit, the columns that fit, every cell cut to its
width: nothing wraps), the totals per app and per chain, and each chain's hops, up or
down and when a down hop is retried. A pure function of the daemon's replies and the
rates (toprates.py), so it is tested without a daemon or a terminal; toploop.py draws
it live."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .printable import printable
from .render import human_age, human_size, uptime
from .toprates import Rate, Total, app_name, chain_name, totals


def rate_text(bytes_per_second: float | None) -> str:
    """A rate in at most 7 characters: 0, 512B/s, 1.2K/s, 34M/s, 1.0G/s."""
    if bytes_per_second is None:
        return "-"
    value = float(bytes_per_second)
    if value < 0.5:
        return "0"
    for unit in ("B", "K", "M", "G", "T"):
        if value < 999.5 or unit == "T":
            text = f"{value:.1f}" if unit != "B" and value < 9.95 else f"{value:.0f}"
            return f"{text}{unit}/s"
        value /= 1024
    raise AssertionError("unreachable")


def size_text(n: Any) -> str:
    """Bytes in at most 7 characters (human_size without its space)."""
    if not isinstance(n, int) or isinstance(n, bool):
        return "-"
    return human_size(n).replace(" ", "").replace("iB", "")


def _app_pid(c: dict[str, Any]) -> str:
    pid = c.get("pid")
    return f"{app_name(c)}[{pid}]" if pid is not None else app_name(c)


def _user(c: dict[str, Any]) -> str:
    if c.get("user"):
        return str(c["user"])
    return str(c["uid"]) if c.get("uid") is not None else "?"


def _target(c: dict[str, Any]) -> str:
    target = str(c.get("target") or "?")
    host = c.get("host")
    if not host:
        return target
    _, sep, port = target.rpartition(":")
    return f"{host}:{port}" if sep and port.isdigit() else str(host)


def hops_of(c: dict[str, Any]) -> list[str]:
    """The hops used, as host:port: the row's "hops", else its route's URLs."""
    hops = c.get("hops")
    if isinstance(hops, list):
        return [str(h) for h in hops]
    route = str(c.get("route") or "")
    return [h.split("://", 1)[-1] for h in route.split(" > ")] if route else []


def _chain_rule(c: dict[str, Any]) -> str:
    return chain_name(c)


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[dict[str, Any], Rate | None], str]
    width: int           # the least it is drawn with
    grow: int = 0        # how much wider it may get when there is room
    right: bool = False  # numbers are right-aligned


def _rate_cell(c: dict[str, Any], r: Rate | None) -> str:
    return rate_text(r.total if r is not None else None)


# In the order they are given room: at 80 columns the first nine fit.
COLUMNS: tuple[Column, ...] = (
    Column("ID", lambda c, r: str(c.get("id", "?")), 4, 3),
    Column("APP", lambda c, r: _app_pid(c), 12, 10),
    Column("TARGET", lambda c, r: _target(c), 15, 20),
    Column("↑", lambda c, r: size_text(c.get("up")), 7, 0, True),
    Column("↓", lambda c, r: size_text(c.get("down")), 7, 0, True),
    Column("RATE", _rate_cell, 7, 0, True),
    Column("AGE", lambda c, r: human_age(c.get("age")), 5, 1, True),
    Column("CHAIN", lambda c, r: _chain_rule(c), 7, 8),
    Column("PATH", lambda c, r: str(c.get("path") or "-"), 8, 1),
    Column("STATE", lambda c, r: str(c.get("state") or "-"), 6, 6),
    Column("USER", lambda c, r: _user(c), 6, 6),
    Column("RULE", lambda c, r: str(c.get("rule") or "-"), 6, 10),
    Column("HOPS", lambda c, r: " ".join(hops_of(c)) or "-", 10, 60),
)


def fit_columns(width: int) -> list[tuple[Column, int]]:
    """The columns that fit in `width` (one space between two), each with the width
    it is drawn with: the least first, in COLUMNS order, then what is left shared out
    in the same order up to each column's growth."""
    chosen: list[Column] = []
    used = -1
    for col in COLUMNS:
        if used + 1 + col.width > width:
            break
        chosen.append(col)
        used += 1 + col.width
    spare = max(0, width - used)
    out = []
    for col in chosen:
        extra = min(col.grow, spare)
        spare -= extra
        out.append((col, col.width + extra))
    return out


def _table(width: int) -> Table:
    return Table(box=None, pad_edge=False, padding=(0, 1), collapse_padding=True,
                 show_edge=False, header_style="bold", width=width, expand=False)


def _cut(text: str, width: int) -> Text:
    """printable() text cut to `width` cells with an ellipsis: nothing from the
    daemon is markup or a terminal control sequence, and nothing wraps."""
    t = Text(printable(text), no_wrap=True, overflow="ellipsis")
    t.truncate(width, overflow="ellipsis")
    return t


def connections_table(conns: Sequence[dict[str, Any]], rates: dict[str, Rate],
                      width: int, rows: int) -> tuple[Table, int]:
    """The connections table at most `width` wide with at most `rows` rows; and how
    many connections did not fit."""
    cols = fit_columns(width)
    table = _table(sum(w for _, w in cols) + len(cols) - 1)
    for col, w in cols:
        table.add_column(col.header, width=w, min_width=w, max_width=w, no_wrap=True,
                         overflow="ellipsis", justify="right" if col.right else "left")
    shown = list(conns)[:max(0, rows)]
    for c in shown:
        r = rates.get(str(c.get("id", "")))
        table.add_row(*[_cut(col.cell(c, r), w) for col, w in cols])
    return table, len(conns) - len(shown)


def totals_table(title: str, items: Sequence[Total], width: int, rows: int) -> Table:
    """APP (or CHAIN), N, ↑, ↓, RATE: the first `rows` of `items`."""
    name_w = max(4, width - (3 + 7 + 7 + 7 + 4))
    table = _table(width)
    table.add_column(title, width=name_w, no_wrap=True, overflow="ellipsis")
    for header, w in (("N", 3), ("↑", 7), ("↓", 7), ("RATE", 7)):
        table.add_column(header, width=w, no_wrap=True, justify="right",
                         overflow="ellipsis")
    for t in items[:max(0, rows)]:
        table.add_row(_cut(t.name, name_w), _cut(str(t.count), 3), _cut(size_text(t.up), 7),
                      _cut(size_text(t.down), 7), _cut(rate_text(t.rate.total), 7))
    return table


def hop_word(hop: dict[str, Any]) -> tuple[str, str]:
    """A hop as host:port and its state: "up", "DOWN" or "DOWN, retry 12s"."""
    url = str(hop.get("url", "?")).split("://", 1)[-1]
    if hop.get("state", "up") != "down":
        return url, str(hop.get("state") or "up")
    retry = hop.get("retry_in")
    if isinstance(retry, (int, float)) and not isinstance(retry, bool) and retry > 0:
        return url, f"DOWN, retry {human_age(float(retry))}"
    return url, "DOWN"


def chain_line(chain: dict[str, Any], width: int) -> Text:
    """c3: 10.0.0.1:1080 up · 10.0.0.2:1080 DOWN, retry 12s · ..."""
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(printable(chain.get("name", "?")) + ":", style="bold")
    for i, hop in enumerate(chain.get("hops") or []):
        if not isinstance(hop, dict):
            continue
        url, state = hop_word(hop)
        line.append(" · " if i else " ")
        line.append(printable(url) + " ")
        line.append(printable(state), style="bold red" if state.startswith("DOWN")
                    else "green")
    line.truncate(width, overflow="ellipsis")
    return line


def distinct_chains(chains: Sequence[Any]) -> list[dict[str, Any]]:
    """The status reply's chains, each name and list of hops once (every `socksify
    --via` session has a chain named "via" of its own)."""
    seen: set[str] = set()
    out = []
    for c in chains:
        if not isinstance(c, dict):
            continue
        key = repr((c.get("name"), [hop_word(h) for h in c.get("hops") or []
                                    if isinstance(h, dict)]))
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def header(status: dict[str, Any], conns: Sequence[dict[str, Any]],
           rates: dict[str, Rate], width: int, filters: str) -> Text:
    up = sum(r.up for r in rates.values())
    down = sum(r.down for r in rates.values())
    bits = [f"socksifyd pid {status.get('pid', '?')}"]
    if isinstance(status.get("uptime"), (int, float)):
        bits.append(f"up {uptime(float(status['uptime']))}")
    bits.append(f"{len(conns)} conn{'' if len(conns) == 1 else 's'}{filters}")
    bits.append(f"↑{rate_text(up)} ↓{rate_text(down)}")
    bits.append("q quits")
    t = Text(printable("  ".join(bits)), style="reverse", no_wrap=True,
             overflow="ellipsis")
    t.truncate(width, overflow="ellipsis", pad=True)
    return t


def frame(status: dict[str, Any], conns: Sequence[dict[str, Any]],
          rates: dict[str, Rate], width: int, height: int,
          filters: str = "") -> RenderableType:
    """The whole screen for a terminal of width x height: never more lines than
    `height`, none longer than `width`."""
    width = max(20, width)
    chains = distinct_chains(status.get("chains") or [])
    apps = totals(conns, rates, "app")
    by_chain = totals(conns, rates, "chain")
    summary_rows = min(3, max(len(apps), len(by_chain)))
    hop_lines = min(4, len(chains))
    show_summary = True
    # the header, the table's header and a line for "... more" always; the totals
    # (a blank line, their header, their rows) and the hops (a title, a line per
    # chain) give way to the connections on a short terminal, hops first
    avail = height - 3

    def blocks() -> int:
        return (2 + summary_rows if show_summary else 0) + \
            (1 + hop_lines if hop_lines else 0)
    want = min(3, max(1, len(conns)))
    while avail - blocks() < want and (hop_lines or show_summary):
        if hop_lines:
            hop_lines -= 1
        elif summary_rows:
            summary_rows -= 1
        else:
            show_summary = False
    rows = max(0, avail - blocks())
    table, more = connections_table(conns, rates, width, rows)
    parts: list[RenderableType] = [header(status, conns, rates, width, filters), table]
    if not conns:
        parts.append(Text("  no live connections", style="dim"))
    elif more:
        parts.append(Text(f"  … {more} more (a taller terminal shows them)",
                          style="dim", no_wrap=True, overflow="ellipsis"))
    if show_summary:
        parts.append(Text(""))
    half = (width - 1) // 2
    if show_summary and width >= 60:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=half)
        grid.add_column(width=width - half - 1)
        grid.add_row(totals_table("APP", apps, half, summary_rows),
                     totals_table("CHAIN", by_chain, width - half - 1, summary_rows))
        parts.append(grid)
    elif show_summary:
        parts.append(totals_table("APP", apps, width, summary_rows))
    if hop_lines:
        parts.append(Text("hops", style="bold"))
        parts += [chain_line(c, width) for c in chains[:hop_lines]]
    return Group(*parts)

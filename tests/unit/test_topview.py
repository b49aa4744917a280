"""`socksifyd top`'s numbers and layout from fake daemon replies (toprates.py,
topview.py), and the connections table's new columns (render.py): rates from two
polls on the daemon's clock, totals per app and chain, the filters, and a frame that
fits an 80x24 terminal whatever the rows hold."""

from __future__ import annotations

import io
from typing import Any

from rich.cells import cell_len
from rich.console import Console

from socksify import render, topview
from socksify.toprates import Meter, connections_request, filtered, reply_now, totals


def row(cid: str, app: str = "curl", chain: str | None = "c3", up: int = 0,
        down: int = 0, age: float = 1.0, **more: Any) -> dict[str, Any]:
    return {"id": cid, "app": app, "pid": 100 + len(cid), "user": "alice", "uid": 1000,
            "target": "10.9.0.2:80", "host": None, "rule": "default", "chain": chain,
            "route": "socks4://10.0.1.1:1080 > socks4://10.0.2.1:1080",
            "up": up, "down": down, "age": age, **more}


def test_rates_come_from_successive_polls_on_the_daemons_clock() -> None:
    meter = Meter()
    first = meter.update(100.0, [row("c1", up=1000, down=4000, age=2.0)])
    assert (first["c1"].up, first["c1"].down) == (500.0, 2000.0)   # over its age
    second = meter.update(100.5, [row("c1", up=1500, down=9000, age=2.5),
                                  row("c2", up=10, age=0.0)])
    assert (second["c1"].up, second["c1"].down) == (1000.0, 10000.0)
    assert "c2" not in second          # new, and no age to rate it over yet
    third = meter.update(101.5, [row("c2", up=30, age=1.0)])
    assert third["c2"].up == 20.0 and "c1" not in third and "c1" not in meter.last
    # a counter that went backwards (a restarted daemon reusing an id) is no rate
    assert meter.update(102.5, [row("c2", up=0, age=1.0)])["c2"].up == 0.0
    # the same clock reading twice: no division by zero, no rate
    assert meter.update(102.5, [row("c2", up=5)]) == {}


def test_reply_now_falls_back_to_our_clock() -> None:
    assert reply_now({"now": 12.5}, 99.0) == 12.5
    assert reply_now({}, 99.0) == 99.0
    assert reply_now({"now": "soon"}, 99.0) == 99.0


def test_totals_per_app_and_chain() -> None:
    conns = [row("c1", "curl", "c3", 10, 100), row("c2", "curl", None, 5, 50),
             row("c3", "git", "c3", 1, 1000)]
    rates = Meter().update(1.0, conns)
    apps = {t.name: t for t in totals(conns, rates, "app")}
    assert (apps["curl"].count, apps["curl"].up, apps["curl"].down) == (2, 15, 150)
    assert apps["curl"].rate.total == 165.0
    chains = totals(conns, rates, "chain")
    assert [t.name for t in chains] == ["c3", "direct"]     # busiest first
    assert chains[0].count == 2 and chains[0].down == 1100


def test_filters() -> None:
    conns = [row("c1", "curl", "c3"), row("c2", "git", None), row("c3", "curl", None),
             "not a row"]
    assert [c["id"] for c in filtered(conns, "curl", None)] == ["c1", "c3"]
    assert [c["id"] for c in filtered(conns, None, "direct")] == ["c2", "c3"]
    assert [c["id"] for c in filtered(conns, "curl", "c3")] == ["c1"]
    assert [c["id"] for c in filtered(conns, None, None)] == ["c1", "c2", "c3"]
    assert filtered(conns, "wget", None) == []


def test_the_request_carries_the_filters_the_daemon_knows() -> None:
    assert connections_request(None, None) == {"op": "connections"}
    assert connections_request("curl", "c3") == {"op": "connections", "app": "curl",
                                                  "chain": "c3"}
    # the daemon's rows name no chain for a direct connection: filtered here only
    assert connections_request(None, "direct") == {"op": "connections"}


def test_rate_and_size_texts_are_short() -> None:
    assert topview.rate_text(None) == "-"
    assert topview.rate_text(0.2) == "0"
    assert topview.rate_text(512) == "512B/s"
    assert topview.rate_text(1536) == "1.5K/s"
    assert topview.rate_text(34 * 1024 * 1024) == "34M/s"
    for n in (0, 1, 999, 1000, 1023, 1024, 10 ** 6, 10 ** 9, 10 ** 12, 10 ** 15):
        assert len(topview.rate_text(n)) <= 7, n
        assert len(topview.size_text(n)) <= 7, n
    assert topview.size_text(None) == "-" and topview.size_text(True) == "-"


def test_columns_fit_the_width() -> None:
    for width in (20, 40, 79, 80, 100, 140, 300):
        cols = topview.fit_columns(width)
        assert sum(w for _, w in cols) + len(cols) - 1 <= width, width
    names = [c.header for c, _ in topview.fit_columns(80)]
    assert names[:3] == ["ID", "APP", "TARGET"] and "PATH" in names and "RATE" in names
    assert [c.header for c, _ in topview.fit_columns(300)] == \
        [c.header for c in topview.COLUMNS]


def _draw(status: dict[str, Any], conns: list[dict[str, Any]], width: int,
          height: int) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=width, height=height, color_system=None,
                      force_terminal=False, legacy_windows=False)
    rates = Meter().update(10.0, conns)
    console.print(topview.frame(status, conns, rates, width, height))
    return out.getvalue().splitlines()


STATUS = {"ok": True, "pid": 4242, "uptime": 65.0, "chains": [
    {"name": "c3", "hops": [{"url": "socks4://10.0.1.1:1080", "state": "up"},
                            {"url": "socks4://10.0.2.1:1080", "state": "down",
                             "retry_in": 12.0}]},
    {"name": "c3", "hops": [{"url": "socks4://10.0.1.1:1080", "state": "up"},
                            {"url": "socks4://10.0.2.1:1080", "state": "down",
                             "retry_in": 12.0}]}]}


def test_a_frame_fits_80x24_however_many_and_however_long_the_rows() -> None:
    hostile = "\x1b[2J\x1b]0;pwned\x07" + "x" * 200
    conns = [row(f"c{i}", app=("very-long-program-name-" * 3) if i % 2 else hostile,
                 chain="a-chain-with-a-long-name", up=i * 1000, down=i * 10 ** 6,
                 age=float(i), path="handoff", state="established",
                 hops=["10.0.1.1:1080", "10.0.2.1:1080"], host="h" * 300)
             for i in range(1, 60)]
    lines = _draw(STATUS, conns, 80, 24)
    assert len(lines) <= 24, "\n".join(lines)
    assert all(cell_len(line) <= 80 for line in lines), "\n".join(lines)
    text = "\n".join(lines)
    assert "\x1b" not in text and "\x07" not in text
    assert "more (a taller terminal shows them)" in text
    assert "socksifyd pid 4242" in lines[0] and "59 conns" in lines[0]
    assert "handoff" in text                     # the data path fits at 80
    assert "10.0.2.1:1080 DOWN, retry 12s" in text
    assert text.count("c3:") == 1                # the same chain listed once


def test_a_frame_of_an_older_daemon_and_a_tiny_terminal() -> None:
    """Rows without the new keys, a status without chains: dashes, no crash; and a
    20x8 terminal still gets a frame within its size."""
    old = [{"id": "c1", "app": "curl", "up": 5, "down": 7}]
    lines = _draw({"ok": True}, old, 80, 24)
    assert any("curl" in line for line in lines)
    lines = _draw(STATUS, [row("c1")] * 10, 20, 8)
    assert len(lines) <= 8 and all(cell_len(line) <= 20 for line in lines)
    lines = _draw({"ok": True}, [], 80, 24)
    assert any("no live connections" in line for line in lines)


def test_connections_table_shows_the_new_columns_when_present() -> None:
    plain = render.connections_text([row("c1", up=10, down=20)])
    assert "PATH" not in plain and "STATE" not in plain and "RATE" not in plain
    rich_rows = [row("c1", up=10, down=20, path="handoff", state="established",
                     rate=2048)]
    text = render.connections_text(rich_rows)
    header = text.splitlines()[0].split()
    assert ["PATH", "STATE"] == [h for h in header if h in ("PATH", "STATE")]
    assert "RATE" in header
    assert "handoff" in text and "established" in text and "2.0 KiB/s" in text

"""Text that `socksifyd` prints: the connections table, the status block with its
chains section, and the systemd user unit. Pure functions of the daemon's JSON replies
(or of a command line), so they are tested without a daemon."""

from __future__ import annotations

import io
from typing import Any, Sequence

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from .printable import printable

# Width used when stdout is not a terminal: wide enough that no row wraps.
PIPE_WIDTH = 1000


def human_size(n: int | float | None) -> str:
    """Bytes for a person: 512 B, 1.2 KiB, 5.4 MiB, 123 MiB, 2.0 GiB."""
    if n is None:
        return "-"
    value = float(n)
    if value < 1024:
        return f"{int(value)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        text = f"{value:.1f}" if value < 99.95 else f"{value:.0f}"
        if float(text) < 1024 or unit == "PiB":
            return f"{text} {unit}"
    raise AssertionError("unreachable")


def human_age(seconds: int | float | None) -> str:
    """A duration for a person: 12s, 3m04s, 1h02m, 2d03h."""
    if seconds is None or seconds < 0:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    minutes, s = divmod(s, 60)
    if minutes < 60:
        return f"{minutes}m{s:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def uptime(seconds: float) -> str:
    """The status block's uptime: 4m05s, 2h03m10s."""
    minutes, sec = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s"


# --- socksifyd connections -----------------------------------------------------------

def _app(c: dict[str, Any]) -> str:
    name = str(c.get("app") or "?")
    return f"{name}[{c['pid']}]" if c.get("pid") is not None else name


def _user(c: dict[str, Any]) -> str:
    if c.get("user"):
        return str(c["user"])
    return str(c["uid"]) if c.get("uid") is not None else "?"


def _target(c: dict[str, Any]) -> str:
    """The host name when the daemon knows it (with the target's port), else the
    address."""
    target = str(c.get("target") or "?")
    host = c.get("host")
    udp = "udp " if c.get("kind") == "udp" else ""
    if not host:
        return udp + target
    _, sep, port = target.rpartition(":")
    return udp + (f"{host}:{port}" if sep and port.isdigit() else str(host))


def _amount(c: dict[str, Any], way: str) -> str:
    """Bytes one way; for a UDP flow, its datagrams too."""
    text = human_size(c.get(way))
    if c.get("kind") == "udp" and c.get("datagrams_" + way, 0) is not None:
        text += f" {c.get('datagrams_' + way, 0)}dg"
    return text


def _chain(c: dict[str, Any]) -> str:
    return str(c.get("chain") or "direct")


def _hops(c: dict[str, Any], short: bool) -> list[str]:
    """The route's hops; `short` drops the socks4:// of plain SOCKS4 hops (the usual
    kind) to save width."""
    route = str(c.get("route") or "")
    if not route:
        return []
    hops = route.split(" > ")
    if short:
        hops = [h[len("socks4://"):] if h.startswith("socks4://") else h for h in hops]
    return hops


def connections_table(conns: Sequence[dict[str, Any]], route_column: bool) -> Table:
    """The live connections, one row each. The route is a column of its own, or (when
    `route_column` is false) dim lines under the chain name, one hop a line."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    # Under a narrow terminal the text columns fold; the numbers never do.
    table.add_column("ID", no_wrap=True)
    table.add_column("APP", overflow="fold", min_width=8)
    table.add_column("USER", overflow="fold", min_width=4)
    table.add_column("TARGET", overflow="fold", min_width=12)
    table.add_column("CHAIN", overflow="fold", min_width=8)
    if route_column:
        table.add_column("ROUTE", style="dim", no_wrap=True)
    # the newer daemon's keys (issue 17), each a column when some row has it
    extra = [k for k in ("path", "state") if any(c.get(k) for c in conns)]
    for key in extra:
        table.add_column(key.upper(), no_wrap=True)
    table.add_column("↑", justify="right", no_wrap=True, min_width=7)
    table.add_column("↓", justify="right", no_wrap=True, min_width=7)
    rate = any(c.get("rate") is not None for c in conns)
    if rate:
        table.add_column("RATE", justify="right", no_wrap=True, min_width=9)
    table.add_column("AGE", justify="right", no_wrap=True, min_width=5)
    # Every cell is a Text of printable(): what the daemon reports (app names, host
    # names) is neither rich markup nor terminal control sequences.
    for c in conns:
        chain = _text(_chain(c))
        route = str(c.get("route") or "")
        cells: list[Text] = [_text(c.get("id", "?")), _text(_app(c)), _text(_user(c)),
                             _text(_target(c))]
        if route_column:
            cells += [chain, _text(route)]
        else:
            for hop in _hops(c, short=True):
                chain.append("\n" + printable(hop), style="dim")
            cells.append(chain)
        cells += [_text(c.get(key) or "-") for key in extra]
        cells += [_text(_amount(c, "up")), _text(_amount(c, "down"))]
        if rate:
            cells.append(_text(_rate(c.get("rate"))))
        cells.append(_text(human_age(c.get("age"))))
        table.add_row(*cells)
    return table


def _rate(value: object) -> str:
    """Bytes per second, as the daemon reports them ("rate": a number, or up and
    down)."""
    if isinstance(value, dict):
        value = sum(v for v in value.values() if isinstance(v, (int, float)))
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-"
    return f"{human_size(value)}/s"


def _text(value: object) -> Text:
    return Text(printable(value))


def print_connections(conns: Sequence[dict[str, Any]], console: Console) -> None:
    """The table, with a ROUTE column if the console is wide enough for it."""
    if not conns:
        console.print("no live connections", highlight=False)
        return
    table = connections_table(conns, route_column=True)
    wide = console.options.update_width(PIPE_WIDTH)
    if Measurement.get(console, wide, table).maximum > console.width:
        table = connections_table(conns, route_column=False)
    console.print(table)


def connections_text(conns: Sequence[dict[str, Any]], width: int = PIPE_WIDTH) -> str:
    """The table as plain text (no colour, no terminal codes), as printed to a pipe."""
    out = io.StringIO()
    print_connections(conns, plain_console(out, width))
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines()) + "\n"


def plain_console(file: Any, width: int = PIPE_WIDTH) -> Console:
    """A console for a pipe or a file: no colour, no styles, no wrapping surprises."""
    return Console(file=file, width=width, no_color=True, color_system=None,
                   force_terminal=False, highlight=False, emoji=False,
                   legacy_windows=False)


# --- socksifyd status ----------------------------------------------------------------

def status_lines(st: dict[str, Any]) -> list[str]:
    """The status block: key/value lines, then a chains section when the daemon sends
    one. Keys an older daemon lacks are left out."""
    rows: list[tuple[str, str]] = [("state", "running")]
    if "pid" in st:
        rows.append(("pid", str(st["pid"])))
    if "version" in st:
        rows.append(("version", str(st["version"])))
    if st.get("uptime") is not None:
        rows.append(("uptime", uptime(float(st["uptime"]))))
    if "socket" in st:
        rows.append(("control socket", str(st["socket"])))
    if "frontdoor" in st:
        rows.append(("SOCKS front door", str(st["frontdoor"] or "off")))
    if "policy" in st:
        policy = str(st["policy"]) if st["policy"] else "none (only socksify sessions)"
        if st.get("rules") is not None and st["policy"]:
            n = int(st["rules"])
            policy += f" ({n} rule{'' if n == 1 else 's'})"
        rows.append(("policy", policy))
    if "sessions" in st:
        rows.append(("sessions", str(st["sessions"])))
    if "live" in st:
        conns = f"{st['live']} relayed, {st.get('pending', 0)} being attached"
        if st.get("handed_off") is not None:
            conns += f", {st['handed_off']} handed off"
            if st.get("handed_live"):
                conns += f" ({st['handed_live']} live)"
        if st.get("connections_total") is not None:
            conns += f", {st['connections_total']} since start"
        if st.get("udp_flows"):
            conns += f", {st['udp_flows']} UDP association(s)"
        rows.append(("connections", conns))
    carrier = st.get("carrier")
    if carrier and carrier.get("port4"):       # carried datagrams (udp = "chain")
        where = f"127.0.0.1:{carrier['port4']}" + (
            f" and [::1]:{carrier['port6']}" if carrier.get("port6") else "")
        dropped = sum(int(n) for n in (carrier.get("dropped") or {}).values())
        rows.append(("UDP carrier", f"{where}, {carrier.get('flows', 0)} flow(s), "
                     f"{carrier.get('grants', 0)} grant(s), {dropped} dropped"
                     + (f"; {carrier['handoff_flows']} handed off"
                        if carrier.get("handoff_flows") else "")))
    lane = st.get("lane")
    if lane:                                   # the compiled connect path
        rows.append(("lane", f"{lane.get('served', 0)} connect(s) built, "
                     f"{lane.get('routes', 0)} route(s) for "
                     f"{lane.get('processes', 0)} process(es)"
                     + (f", {lane['tunnels']} pre-built tunnel(s)"
                        if lane.get("tunnels") else "")))
    down = st.get("hops_down") or {}
    rows.append(("hops down", ", ".join(f"{h} (retry in {float(s):.0f}s)"
                                        for h, s in down.items()) or "none"))
    if st.get("hops_stepwise"):     # seen to mishandle pipelined requests
        rows.append(("step by step", ", ".join(printable(h)
                                                for h in st["hops_stepwise"])))
    width = max(len(k) for k, _ in rows)
    lines = [f"{key:>{width}}  {value}" for key, value in rows]
    if "chains" in st:
        lines += [""] + chain_lines(st.get("chains") or [])
    return lines


def hop_state(hop: dict[str, Any]) -> str:
    """"up", "DOWN, retry in 12s" or "DOWN"."""
    if hop.get("state", "up") != "down":
        return str(hop.get("state") or "up")
    retry = hop.get("retry_in")
    return f"DOWN, retry in {human_age(float(retry))}" if retry else "DOWN"


def chain_lines(chains: Sequence[dict[str, Any]]) -> list[str]:
    """chains
         anon  dynamic, policy
           socks4://10.0.0.5:1080  up
           socks4://10.1.0.7:1080  DOWN, retry in 12s"""
    if not chains:
        return ["chains  none"]
    lines = ["chains"]
    name_width = max(len(str(c.get("name", "?"))) for c in chains)
    for c in chains:
        about = ", ".join(str(c[k]) for k in ("strategy", "origin", "data_path")
                          if c.get(k))
        pool = c.get("prebuilt")
        if pool:
            about += (f", pre-built {pool.get('ready', 0)}/{pool.get('size', 0)} ready "
                      f"({pool.get('used', 0)} used, {pool.get('discarded', 0)} "
                      "expired)")
        lines.append(f"  {str(c.get('name', '?')):<{name_width}}  {about}".rstrip())
        hops = c.get("hops") or []
        url_width = max((len(str(h.get("url", "?"))) for h in hops), default=0)
        for hop in hops:
            lines.append(f"    {str(hop.get('url', '?')):<{url_width}}  {hop_state(hop)}")
    return lines


# --- socksifyd install-service -------------------------------------------------------

UNIT_TEMPLATE = """\
# socksifyd as a systemd user service (docs/service.md).
# Install:  socksifyd install-service
#           systemctl --user daemon-reload && systemctl --user enable --now socksifyd
[Unit]
Description=socksify daemon: SOCKS chains for socksified programs

[Service]
Type=simple
ExecStart={exec_start}
# SIGHUP re-reads the policy; live connections go on. A bad policy is refused and
# the old one stays (see the journal).
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2
# SIGTERM is a graceful stop: live connections get a few seconds to finish.
TimeoutStopSec=20

[Install]
WantedBy=default.target
"""


def _systemd_quote(arg: str) -> str:
    """Quote one ExecStart word the way systemd reads it."""
    if arg and all(ch.isalnum() or ch in "/._-+:=,@%" for ch in arg):
        return arg.replace("%", "%%")
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped}"'


def unit_file(command: Sequence[str], config: str | None = None) -> str:
    """The unit for the socksifyd found at `command` (its argv prefix: ["/usr/bin/
    socksifyd"] or [python, "-m", "socksify.service"]); `config` adds -c FILE."""
    argv = [*command, "run"] + (["-c", config] if config else [])
    return UNIT_TEMPLATE.format(exec_start=" ".join(_systemd_quote(a) for a in argv))

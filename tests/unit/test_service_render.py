"""socksifyd's printed output (connections table, status, systemd unit) from sample
daemon replies, `install-service --print`, and the example policies: no daemon."""

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from socksify import render

ROOT = Path(__file__).resolve().parent.parent.parent
POLICIES = sorted((ROOT / "docs" / "policies").glob("*"))

CONNS: list[dict[str, Any]] = [
    {"id": "c12", "app": "curl", "pid": 4242, "user": "alice", "uid": 1000,
     "target": "10.77.2.3:8000", "host": None, "rule": "rule 2 (line 14)",
     "chain": "anon", "route": "socks4://10.0.0.5:1080 > socks4://10.1.0.7:1080",
     "up": 1234, "down": 5678901, "age": 12.5},
    {"id": "c15", "app": "git", "pid": 5120, "user": "alice", "uid": 1000,
     "target": "192.0.2.44:443", "host": "git.example.org", "rule": "default",
     "chain": "anon", "route": "socks4://10.1.0.7:1080", "up": 48211, "down": 912,
     "age": 184},
    {"id": "c16", "app": "ssh", "pid": 5301, "user": "", "uid": 1001,
     "target": "192.168.1.20:22", "host": None, "rule": "lan", "chain": "",
     "route": "", "up": 0, "down": 4102, "age": 3725},
]


@pytest.mark.parametrize("n,text", [
    (None, "-"), (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"), (1234, "1.2 KiB"),
    (5678901, "5.4 MiB"), (1048575, "1.0 MiB"), (100 * 2**20, "100 MiB"),
    (3 * 2**30 // 2, "1.5 GiB"),
])
def test_human_size(n: int | None, text: str) -> None:
    assert render.human_size(n) == text


@pytest.mark.parametrize("seconds,text", [
    (None, "-"), (0, "0s"), (12.5, "12s"), (59.9, "59s"), (60, "1m00s"),
    (184, "3m04s"), (3599, "59m59s"), (3725, "1h02m"), (86400 + 3 * 3600, "1d03h"),
])
def test_human_age(seconds: float | None, text: str) -> None:
    assert render.human_age(seconds) == text


def test_connections_table_wide() -> None:
    text = render.connections_text(CONNS)
    lines = text.splitlines()
    assert lines[0].split() == ["ID", "APP", "USER", "TARGET", "CHAIN", "ROUTE",
                                "↑", "↓", "AGE"]
    assert len(lines) == 4                       # header + one line per connection
    assert "\x1b" not in text                    # no terminal codes for a pipe
    assert all(line == line.rstrip() for line in lines)
    curl, git, ssh = lines[1:]
    assert curl.split() == ["c12", "curl[4242]", "alice", "10.77.2.3:8000", "anon",
                            "socks4://10.0.0.5:1080", ">", "socks4://10.1.0.7:1080",
                            "1.2", "KiB", "5.4", "MiB", "12s"]
    assert "git.example.org:443" in git and "192.0.2.44" not in git   # host wins
    assert git.split()[-5:] == ["47.1", "KiB", "912", "B", "3m04s"]
    assert ssh.split()[:5] == ["c16", "ssh[5301]", "1001", "192.168.1.20:22", "direct"]
    assert ssh.endswith("1h02m")
    # the columns line up: every AGE ends in the same column
    assert len({len(line) for line in lines}) == 1


def test_udp_flow_row() -> None:
    """A UDP association (the front door's UDP ASSOCIATE) is marked udp, with its
    datagrams beside its bytes."""
    flow = {"id": "c20", "app": "dig", "pid": 77, "user": "alice", "uid": 1000,
            "target": "10.77.2.3:53", "host": None, "rule": "dns", "chain": "anon",
            "route": "socks5://10.0.0.5:1080", "up": 120, "down": 3000, "age": 2,
            "kind": "udp", "datagrams_up": 3, "datagrams_down": 2, "dropped": 0}
    row = render.connections_text([flow]).splitlines()[1]
    assert "udp 10.77.2.3:53" in row and "3dg" in row and "2dg" in row, row
    status = "\n".join(render.status_lines({"live": 1, "udp_flows": 1}))
    assert "1 UDP association" in status


def test_status_names_hops_asked_step_by_step() -> None:
    status = "\n".join(render.status_lines({"hops_stepwise": ["10.0.0.1:1080"]}))
    assert "step by step  10.0.0.1:1080" in status
    assert "step by step" not in "\n".join(render.status_lines({"hops_stepwise": []}))


def test_status_names_the_udp_carrier() -> None:
    status = "\n".join(render.status_lines({"carrier": {
        "port4": 40001, "port6": 40002, "flows": 2, "grants": 5,
        "dropped": {"unknown token": 3, "a socket of another user": 1}}}))
    assert ("UDP carrier  127.0.0.1:40001 and [::1]:40002, 2 flow(s), 5 grant(s), "
            "4 dropped") in status
    assert "UDP carrier" not in "\n".join(render.status_lines({"carrier": {"port4": 0}}))


def test_status_counts_what_the_lane_built() -> None:
    status = "\n".join(render.status_lines({"lane": {"served": 41, "routes": 3,
                                                     "processes": 2}}))
    assert "lane  41 connect(s) built, 3 route(s) for 2 process(es)\n" in status + "\n"
    status = "\n".join(render.status_lines({"lane": {"served": 4, "routes": 1,
                                                     "processes": 1, "tunnels": 9}}))
    assert ("lane  4 connect(s) built, 1 route(s) for 1 process(es), 9 pre-built "
            "tunnel(s)") in status
    assert "lane" not in "\n".join(render.status_lines({"lane": None}))


def test_connections_table_narrow_puts_the_route_under_the_chain() -> None:
    text = render.connections_text(CONNS, width=80)
    lines = text.splitlines()
    assert "ROUTE" not in lines[0]
    assert all(len(line) <= 80 for line in lines)
    chain_col = lines[0].index("CHAIN")
    assert lines[1][chain_col:].startswith("anon")
    assert lines[2][chain_col:].startswith("10.0.0.5:1080")
    assert lines[3][chain_col:].startswith("10.1.0.7:1080")
    for value in ("1.2 KiB", "5.4 MiB", "12s", "1h02m"):   # numbers are never cut
        assert value in text


def test_connections_table_keeps_socks4a_scheme_when_narrow() -> None:
    conn = dict(CONNS[0], route="socks4://10.0.0.5:1080 > socks4a://192.0.2.9:1080")
    text = render.connections_text([conn], width=90)
    assert "socks4a://192.0.2.9:1080" in text and "socks4://" not in text


def test_no_connections_is_one_line() -> None:
    assert render.connections_text([]) == "no live connections\n"


STATUS: dict[str, Any] = {
    "ok": True, "version": "0.1.0", "pid": 4321, "uptime": 3725.2,
    "socket": "/run/user/1000/socksify/control.sock",
    "policy": "/home/alice/.config/socksify/socksify.toml", "rules": 3,
    "sessions": 1, "live": 3, "pending": 0, "connections_total": 57,
    "hops_down": {"socks4://10.0.0.5:1080": 12.3},
    "chains": [
        {"name": "anon", "strategy": "dynamic", "origin": "policy", "hops": [
            {"url": "socks4://10.0.0.5:1080", "state": "down", "retry_in": 12.3},
            {"url": "socks4://10.1.0.7:1080", "state": "up", "retry_in": None}]},
        {"name": "via", "strategy": "strict", "origin": "session", "hops": [
            {"url": "socks4://198.51.100.7:1080", "state": "up", "retry_in": None},
            {"url": "socks4://198.51.100.8:1080", "state": "down", "retry_in": None}]},
    ],
}


def test_status_block_and_chains() -> None:
    lines = render.status_lines(STATUS)
    text = "\n".join(lines)
    assert "   pid  4321" in text and "uptime  1h02m05s" in text
    assert "policy  /home/alice/.config/socksify/socksify.toml (3 rules)" in text
    assert "connections  3 relayed, 0 being attached, 57 since start" in text
    chains = lines[lines.index("chains"):]
    assert chains == [
        "chains",
        "  anon  dynamic, policy",
        "    socks4://10.0.0.5:1080  DOWN, retry in 12s",
        "    socks4://10.1.0.7:1080  up",
        "  via   strict, session",
        "    socks4://198.51.100.7:1080  up",
        "    socks4://198.51.100.8:1080  DOWN",
    ]


def test_status_of_an_older_daemon_without_the_new_keys() -> None:
    old = {k: v for k, v in STATUS.items()
           if k not in ("chains", "rules", "connections_total")}
    text = "\n".join(render.status_lines(old))
    assert "connections  3 relayed, 0 being attached" in text
    assert "since start" not in text and "rules" not in text and "chains" not in text
    assert "hops down  socks4://10.0.0.5:1080 (retry in 12s)" in text


def test_status_without_policy_or_chains() -> None:
    st = dict(STATUS, policy=None, chains=[], hops_down={})
    text = "\n".join(render.status_lines(st))
    assert "policy  none (only socksify sessions)" in text
    assert "hops down  none" in text and "chains  none" in text


def test_unit_file() -> None:
    unit = render.unit_file(["/opt/sk/bin/socksifyd"])
    assert "\nType=simple\n" in unit
    assert "\nExecStart=/opt/sk/bin/socksifyd run\n" in unit
    assert "\nExecReload=/bin/kill -HUP $MAINPID\n" in unit
    assert "\nRestart=on-failure\n" in unit
    assert "\n[Install]\nWantedBy=default.target\n" in unit


def test_unit_file_quotes_for_systemd() -> None:
    unit = render.unit_file(["/opt/my env/bin/python3", "-m", "socksify.service"],
                            config="/home/a/100%.toml")
    assert '\nExecStart="/opt/my env/bin/python3" -m socksify.service run ' \
        "-c /home/a/100%%.toml\n" in unit


def test_scripts_unit_is_the_rendered_one() -> None:
    shipped = (ROOT / "scripts" / "socksifyd.service").read_text()
    assert shipped == render.unit_file(["/usr/local/bin/socksifyd"])


def test_install_service_print(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "socksify.service", "install-service",
                          "--print"], capture_output=True, text=True, timeout=30,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                              "XDG_CONFIG_HOME": str(tmp_path / "cfg")})
    assert out.returncode == 0, out.stderr
    execs = [line for line in out.stdout.splitlines() if line.startswith("Exec")]
    start = next(line for line in execs if line.startswith("ExecStart="))
    assert start.split()[-1] == "run" and start[len("ExecStart=")] == "/"
    assert any(line.startswith("ExecReload=") and "HUP" in line for line in execs)
    assert not (tmp_path / "cfg").exists()            # --print writes nothing


def test_install_service_writes_under_xdg_config_home(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "socksify.service", "install-service"],
                         capture_output=True, text=True, timeout=30,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                              "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
                              "SOCKSIFY_RUNTIME_DIR": str(tmp_path / "run")})
    assert out.returncode == 0, out.stderr
    unit = tmp_path / "cfg" / "systemd" / "user" / "socksifyd.service"
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit.read_text()
    assert "systemctl --user daemon-reload && systemctl --user enable --now socksifyd" \
        in out.stdout


def test_connections_without_a_daemon_exits_3(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "socksify.service", "connections"],
                         capture_output=True, text=True, timeout=30,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                              "SOCKSIFY_RUNTIME_DIR": str(tmp_path / "run")})
    assert out.returncode == 3
    assert f"socksifyd: not running (no daemon at {tmp_path / 'run'}" in out.stderr


def test_example_policies_exist() -> None:
    assert {p.name for p in POLICIES} >= {"anonymous-browsing.toml",
                                          "block-one-app.toml", "lan-direct.toml",
                                          "pinned-exit.toml"}


@pytest.mark.parametrize("path", POLICIES, ids=lambda p: p.name)
def test_example_policy_parses_and_has_a_default(path: Path) -> None:
    assert path.suffix == ".toml"
    doc = tomllib.loads(path.read_text())
    action = doc["default"]["action"]
    assert action in ("direct", "block") or \
        action.removeprefix("chain:") in doc.get("chains", {})


def test_status_shows_handoff_and_prebuilt_tunnels() -> None:
    from socksify.render import chain_lines, status_lines
    chain = {"name": "c3", "strategy": "strict", "origin": "policy",
             "data_path": "handoff", "hops": [{"url": "socks4://10.0.0.5:1080",
                                               "state": "up"}],
             "prebuilt": {"ready": 2, "size": 3, "built": 9, "used": 6, "discarded": 1}}
    text = "\n".join(chain_lines([chain]))
    assert "c3  strict, policy, handoff, pre-built 2/3 ready (6 used, 1 expired)" \
        in text, text
    text = "\n".join(status_lines({"live": 1, "pending": 0, "handed_off": 41}))
    assert "1 relayed, 0 being attached, 41 handed off" in text, text


def test_handed_off_udp_flow_row_and_status() -> None:
    """A handed-off UDP flow (the program's socket talks to hop 1 itself) has no byte
    or datagram counts: "-", never 0; status says how many are handed off."""
    flow = {"id": "c21", "app": "dig", "pid": 78, "user": "alice", "uid": 1000,
            "target": "10.77.2.3:53", "host": None, "rule": "dns", "chain": "anon",
            "route": "socks5://10.0.0.5:1080", "up": None, "down": None, "age": 2,
            "path": "handoff", "kind": "udp", "datagrams_up": None,
            "datagrams_down": None, "dropped": None}
    row = render.connections_text([flow]).splitlines()[1]
    assert "udp 10.77.2.3:53" in row and "dg" not in row and " - " in row, row
    status = "\n".join(render.status_lines({"carrier": {
        "port4": 40001, "port6": 0, "flows": 0, "grants": 1, "dropped": {},
        "handoff_flows": 1}}))
    assert "0 flow(s), 1 grant(s), 0 dropped; 1 handed off" in status, status

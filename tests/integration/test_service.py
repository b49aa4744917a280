"""socksifyd as a service: start/stop/status, a graceful stop with a live transfer, the
live connections table, hop health shared by every program, other users on a root
daemon's control socket, and check-config."""

from __future__ import annotations

import errno
import json
import os
import pwd
import re
import shutil
import stat
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

import lab as lablib
import users as userslib
from conftest import ClientResult, assert_errno, start_daemon

NETCLIENT = Path(__file__).parent / "netclient.py"


def marker(name: str) -> str:
    return f"{name}-{os.urandom(4).hex()}"


def curl(out: Path, url: str, *extra: str) -> list[str]:
    return ["curl", "-q", "-sS", "--connect-timeout", "20", "--max-time", "60", *extra,
            "-o", str(out), url]


def write_policy(path: Path, hops: list[str], body: str, strategy: str = "strict",
                 data_path: str = "handoff") -> Path:
    quoted = ", ".join(f'"{h}"' for h in hops)
    path.write_text(f'[chains.c3]\nhops = [{quoted}]\nstrategy = "{strategy}"\n'
                    f'data_path = "{data_path}"\n\n' + textwrap.dedent(body))
    return path


EVERYTHING_THROUGH_C3 = """\
    [default]
    action = "chain:c3"
    """


def connections_json(sk) -> list[dict[str, Any]]:
    res = sk.socksifyd("connections", "--json")
    assert res.returncode == 0, sk.describe(res)
    try:
        doc = json.loads(res.stdout)
    except ValueError:
        raise AssertionError(f"not JSON:\n{sk.describe(res)}") from None
    assert set(doc) == {"connections", "now"} and isinstance(doc["now"], float), doc
    return list(doc["connections"])


def wait_flowing(sk, bg) -> None:
    """Wait (bounded) until the daemon relays a connection that carried data down."""
    def flowing() -> bool:
        if not bg.running():
            raise AssertionError(f"the transfer ended before it was seen running\n"
                                 f"{bg.result().describe()}\n{sk.daemon_log()}")
        reply = sk.control({"op": "connections"})
        return any(c["down"] > 0 for c in reply["connections"])
    lablib.wait_until(flowing, 15, "the transfer to carry data")


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return True
    return state in ("Z", "X")


# --- start, status, stop -------------------------------------------------------------

@pytest.mark.lab
def test_start_twice_status_stop(lab: lablib.Lab, sk, tmp_path: Path) -> None:
    pol = write_policy(tmp_path / "daemon.toml", sk.hops(3), EVERYTHING_THROUGH_C3)
    pid = start_daemon(sk, pol)

    res = sk.socksifyd("start", "-c", str(pol))
    assert res.returncode == 1, sk.describe(res)
    assert "already running" in res.stderr, sk.describe(res)
    assert sk.daemon_pid() == pid and not gone(pid)

    res = sk.socksifyd("status")
    assert res.returncode == 0, sk.describe(res)
    fields = dict(re.findall(r"^\s*(\w[\w ]*?)\s{2,}(.*)$", res.stdout, re.M))
    assert fields.get("state") == "running", sk.describe(res)
    assert fields.get("pid") == str(pid), sk.describe(res)
    assert str(pol) in fields.get("policy", ""), sk.describe(res)

    sock = sk.runtime_dir / "control.sock"
    assert sock.exists()
    res = sk.socksifyd("stop")
    assert res.returncode == 0, sk.describe(res)
    assert not sk.pidfile.exists(), sk.describe(res)
    assert not sock.exists(), sk.describe(res)
    lablib.wait_until(lambda: gone(pid), 10, f"socksifyd pid {pid} to exit")

    res = sk.socksifyd("status")
    assert res.returncode == 3, sk.describe(res)
    assert "not running" in res.stdout + res.stderr, sk.describe(res)


@pytest.mark.lab
def test_stop_with_a_live_transfer(lab: lablib.Lab, sk, tmp_path: Path) -> None:
    """A chained download at 1 MiB/s (about 16 s) is running: `socksifyd stop` gives it
    the grace period (5 s), then cuts it and returns; the daemon is gone, and curl ends
    with an error (partial file) instead of hanging or reporting success. (At 2 MiB/s
    a busy machine's curl once caught up on its average rate and finished within the
    grace.)"""
    pol = write_policy(tmp_path / "daemon.toml", sk.hops(3), EVERYTHING_THROUGH_C3,
                       data_path="relay")  # the daemon carries the bytes
    pid = start_daemon(sk, pol)
    out = tmp_path / "big.bin"
    with lab.small_client_buffers():
        bg = sk.spawn(curl(out, lab.url("big.bin", marker("stop")), "--limit-rate",
                           "1M"), preload=True)
        wait_flowing(sk, bg)

        started = time.monotonic()
        res = sk.socksifyd("stop", timeout=30)
        took = time.monotonic() - started
        assert res.returncode == 0, sk.describe(res)
        assert 4 <= took < 12, f"stop took {took:.1f}s (the grace is 5 s)\n" \
            + sk.describe(res)
        lablib.wait_until(lambda: gone(pid), 5, f"socksifyd pid {pid} to exit")
        res = bg.wait(15)   # raises (and fails the test) if the client hangs
    log = sk.daemon_log()
    assert res.returncode in (18, 56), f"{res.describe()}\n{log}"  # partial / recv error
    assert out.stat().st_size < lablib.BIG_SIZE if out.exists() else True
    assert "stopping: 1 live connection(s)" in log, log
    assert "cancelled 1 connection(s) still open after 5s" in log, log


# --- the connections table -----------------------------------------------------------

@pytest.mark.lab
def test_connections_json_shows_a_live_transfer(lab: lablib.Lab, sk,
                                                tmp_path: Path) -> None:
    """`socksifyd connections --json` during a chained curl download at 4 MiB/s: one
    connection, curl's, to the far server on chain c3, its bytes down growing; the
    table is empty once curl is done."""
    pol = write_policy(tmp_path / "daemon.toml", sk.hops(3), EVERYTHING_THROUGH_C3,
                       data_path="relay")  # the daemon carries the bytes
    start_daemon(sk, pol)
    out = tmp_path / "big.bin"
    with lab.small_client_buffers():
        bg = sk.spawn(curl(out, lab.url("big.bin", marker("table")), "--limit-rate",
                           "4M"), preload=True)
        wait_flowing(sk, bg)
        first = connections_json(sk)
        time.sleep(1.0)
        second = connections_json(sk)
        running = bg.running()
        res = bg.wait(60)
    assert running, f"the transfer ended too soon to see it grow\n{res.describe()}"
    for table in (first, second):
        assert len(table) == 1, table
        conn = table[0]
        assert conn["app"] == "curl" and conn["chain"] == "c3", conn
        assert conn["target"] == f"{lab.far_ip}:{lab.http_port}", conn
        assert conn["pid"] == bg.proc.pid, (conn, bg.proc.pid)
        assert lab.hops[0].url in conn["route"] and lab.hops[2].url in conn["route"], conn
    assert first[0]["id"] == second[0]["id"]
    assert first[0]["up"] > 0, first     # the request
    assert 0 < first[0]["down"] < second[0]["down"] < lablib.BIG_SIZE, (first, second)

    assert res.returncode == 0, res.describe()
    assert lablib.sha256_file(out) == lab.big_sha256
    lablib.wait_until(lambda: connections_json(sk) == [], 5,
                      "the connections table to empty")


# --- hop health is shared ------------------------------------------------------------

@pytest.mark.lab
def test_dead_hop_is_shared_by_all_programs(lab: lablib.Lab, sk, tmp_path: Path) -> None:
    """A dynamic chain [dead, hop1, hop2]: the first program's connection skips the dead
    hop and marks it down; status shows it down with a retry time; a second program
    (curl) connects without the dead hop being tried again."""
    pol = write_policy(tmp_path / "daemon.toml",
                       [lab.dead_hop_url, lab.hops[0].url, lab.hops[1].url],
                       EVERYTHING_THROUGH_C3, strategy="dynamic")
    start_daemon(sk, pol)
    dead = lab.dead_hop_url.split("//", 1)[1]

    m = marker("health1")
    before = lab.hop_connects()
    c = sk.bare_client("rawfetch", lab.far_ip, str(lab.http_port), f"/small.bin?m={m}")
    assert c.ok and c["sha256"] == lab.small_sha256, c.describe()
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
    lab.wait_hop_connects(before, [1, 1, 0])
    targets = lab.hop_targets_since(before)
    assert targets == [[lab.hop_addr(2)], [lab.far_http_addr], []], targets

    st = sk.control({"op": "status"})
    assert st.get("ok"), st
    assert dead in st["hops_down"] and 0 < st["hops_down"][dead] <= 5, st["hops_down"]
    (chain,) = st["chains"]
    assert (chain["name"], chain["strategy"], chain["origin"]) == \
        ("c3", "dynamic", "policy"), chain
    states = [(h["url"], h["state"]) for h in chain["hops"]]
    assert states == [(lab.dead_hop_url, "down"), (lab.hops[0].url, "up"),
                      (lab.hops[1].url, "up")], chain
    assert 0 < chain["hops"][0]["retry_in"] <= 5, chain
    res = sk.socksifyd("status")
    assert res.returncode == 0, sk.describe(res)
    assert re.search(rf"{re.escape(lab.dead_hop_url)}\s+DOWN, retry in \d+s", res.stdout), \
        sk.describe(res)

    m2 = marker("health2")
    out = tmp_path / "small.bin"
    before = lab.hop_connects()
    res = lab.client_run(curl(out, lab.url("small.bin", m2)),
                         env={**sk.env, "LD_PRELOAD": sk.shim}, timeout=60)
    assert res.returncode == 0, sk.describe(res)
    assert lablib.sha256_file(out) == lab.small_sha256
    assert [r.client for r in lab.http.requests_for(m2)] == [lab.proxy_far_ip]
    lab.wait_hop_connects(before, [1, 1, 0])
    assert lab.hop_targets_since(before) == [[lab.hop_addr(2)], [lab.far_http_addr], []]

    log = sk.daemon_log(10**6)
    failures = [ln for ln in log.splitlines() if f"hop {lab.dead_hop_url} failed" in ln]
    assert len(failures) == 1, f"the dead hop should be tried once:\n{log}"
    curl_lines = [ln for ln in log.splitlines() if "curl[" in ln and "connected" in ln]
    assert len(curl_lines) == 1 and dead not in curl_lines[0], log


# --- other users on root's daemon ----------------------------------------------------

def _tool(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if found is None:
        if lablib.in_ci():
            pytest.fail(f"CI is set and {name} is missing", pytrace=False)
        pytest.skip(f"{name} not found")
    return found


@pytest.fixture
def two_users(lab: lablib.Lab) -> Iterator[list[pwd.struct_passwd]]:
    """Two fresh system users (no home, no shell), deleted afterwards."""
    _tool("useradd"), _tool("userdel"), _tool("setpriv")
    with userslib.system_users("ab") as users:
        yield users


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A world-readable copy of the shim and netclient.py: the installed shim may sit
    where other users cannot read it, and an unreadable LD_PRELOAD is silently skipped
    by the loader (the program would then connect directly)."""
    d = Path(tempfile.mkdtemp(prefix="skshare-"))
    try:
        d.chmod(0o755)
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.lab
def test_other_users_on_a_root_daemon(lab: lablib.Lab, sk, tmp_path: Path,
                                      two_users: list[pwd.struct_passwd],
                                      shared_dir: Path) -> None:
    """Root's daemon with allow_users = [A]: A's program goes through the chain; B's
    program is refused on the control socket (EACCES) and reaches nothing, not even
    the directly reachable near witness."""
    user_a, user_b = two_users
    shim = shared_dir / "libsocksify.so"
    shutil.copy(sk.shim, shim)
    shim.chmod(0o755)
    client = shared_dir / "netclient.py"
    shutil.copy(NETCLIENT, client)
    client.chmod(0o644)
    pol = write_policy(tmp_path / "daemon.toml", sk.hops(3), f"""\
        [daemon]
        allow_users = ["{user_a.pw_name}"]

        [default]
        action = "chain:c3"
        """)
    start_daemon(sk, pol)
    assert stat.S_IMODE(sk.runtime_dir.stat().st_mode) == 0o711
    assert stat.S_IMODE((sk.runtime_dir / "control.sock").stat().st_mode) == 0o666

    def as_user(user: pwd.struct_passwd, *args: str, shimmed: bool = True) -> Any:
        env = [f"SOCKSIFY_RUNTIME_DIR={sk.runtime_dir}", "PATH=/usr/bin:/bin",
               "NETCLIENT_TIMEOUT=10"]
        if shimmed:
            env.append(f"LD_PRELOAD={shim}")
        argv = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
                "--clear-groups", "env", "-i", *env, "/usr/bin/python3", str(client),
                *args]
        res = lab.client_run(argv, env=lablib.clean_env(), timeout=60)
        return ClientResult(res, sk)

    # A: through the chain, both to the far server and to the near witness
    w_before = lab.witness.count()
    m = marker("usera")
    before = lab.hop_connects()
    c = as_user(user_a, "rawfetch", lab.far_ip, str(lab.http_port), f"/small.bin?m={m}")
    assert c.ok and c["sha256"] == lab.small_sha256, \
        f"user {user_a.pw_name} (allow_users) could not fetch through root's daemon\n" \
        + c.describe()
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
    assert all(lab.wait_hop_connects(before, [1, 1, 1])), lab.hop_targets_since(before)
    c = as_user(user_a, "connect", lab.proxy_near_ip, str(lab.witness.port))
    assert c.ok, c.describe()
    lablib.wait_until(lambda: lab.witness.count() >= w_before + 1, 5, "the witness")
    assert lab.witness.accepted[-1][0] == lab.proxy_near_ip, lab.witness.accepted[-3:]

    # B: refused by the daemon, so every connect fails with EACCES -- and the witness,
    # which a direct connection would reach, sees nothing (the shim is loaded)
    c = as_user(user_b, "connect", lab.proxy_near_ip, str(lab.witness.port))
    assert_errno(c, errno.EACCES)
    m = marker("userb")
    c = as_user(user_b, "rawfetch", lab.far_ip, str(lab.http_port), f"/small.bin?m={m}")
    assert_errno(c, errno.EACCES)
    assert lab.http.requests_for(m) == []
    log = sk.daemon_log()
    assert f"refused control connection from uid {user_b.pw_uid}" in log, log
    assert f"refused control connection from uid {user_a.pw_uid}" not in log, log
    # control: B without the shim does reach the witness, directly; the witness
    # accepts in order, so it would have counted a leaked connection before this one
    c = as_user(user_b, "connect", lab.proxy_near_ip, str(lab.witness.port),
                shimmed=False)
    assert c.ok, c.describe()
    lablib.wait_until(lambda: lab.witness.count() >= w_before + 2, 5, "the witness")
    assert lab.witness.count() == w_before + 2, lab.witness.accepted[-3:]
    assert lab.witness.accepted[-1][0] == lab.client_ip


STATUS_PROBE = """\
import json, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
try:
    s.connect(sys.argv[1])
except OSError as exc:
    print(json.dumps({"connected": False, "error": str(exc)}))
    sys.exit(0)
s.sendall(b'{"op": "status"}\\n')
data = b""
while chunk := s.recv(65536):
    data += chunk
print(json.dumps({"connected": True, "reply": data.decode(errors="replace")}))
"""


@pytest.mark.lab
def test_control_socket_refuses_other_uids(lab: lablib.Lab, sk, tmp_path: Path,
                                           two_users: list[pwd.struct_passwd]) -> None:
    """The daemon's own gate, without the shim: on root's shared control socket (0666
    in a 0711 directory) user A's status request is answered, user B's connection is
    closed unanswered and logged as refused."""
    user_a, user_b = two_users
    pol = write_policy(tmp_path / "daemon.toml", sk.hops(3), f"""\
        [daemon]
        allow_users = ["{user_a.pw_name}"]
        """)
    start_daemon(sk, pol)

    def probe(user: pwd.struct_passwd) -> dict[str, Any]:
        res = lab.client_run(["setpriv", f"--reuid={user.pw_uid}",
                              f"--regid={user.pw_gid}", "--clear-groups", "env", "-i",
                              "/usr/bin/python3", "-c", STATUS_PROBE,
                              str(sk.runtime_dir / "control.sock")],
                             env=lablib.clean_env(), timeout=30)
        assert res.returncode == 0, res.describe()
        out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
        assert out["connected"], (user.pw_name, out)
        return out

    reply = probe(user_a)["reply"]
    assert json.loads(reply).get("ok") is True, reply
    assert probe(user_b)["reply"] == ""
    log = sk.daemon_log()
    assert f"refused control connection from uid {user_b.pw_uid}" in log, log
    assert f"refused control connection from uid {user_a.pw_uid}" not in log, log


# --- check-config ----------------------------------------------------------------------

GOOD = """\
[chains.anon]
hops = ["socks4://10.0.0.5:1080", "socks5://10.1.0.7:1080"]

[[rules]]
name = "lan"
dest = ["10.0.0.0/8"]
action = "direct"

[[rules]]
app = ["curl"]
action = "chain:anon"

[default]
action = "block"
"""

SHADOWED = """\
[[rules]]
name = "lan"
dest = ["10.0.0.0/8"]
action = "direct"

[[rules]]
name = "office"
dest = ["10.1.0.0/16"]
action = "block"
"""

BROKEN = """\
[[rules]]
dest = ["10.0.0.0/8"]
action = "sideways"
"""


def check_config(socksify_install, path: Path) -> lablib.Result:
    return lablib.run([socksify_install.socksifyd, "check-config", str(path)],
                      env=lablib.clean_env(), timeout=30)


def test_check_config(socksify_install, tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    res = check_config(socksify_install, good)
    assert res.returncode == 0, res.describe()
    assert f"{good}: ok" in res.stdout and "2 rule(s)" in res.stdout, res.describe()
    assert "warning" not in res.stdout + res.stderr, res.describe()

    shadowed = tmp_path / "shadowed.toml"
    shadowed.write_text(SHADOWED)
    res = check_config(socksify_install, shadowed)
    assert res.returncode == 0, res.describe()
    assert f"warning: {shadowed}:6: office can never match" in res.stderr, res.describe()
    assert "lan matches everything it would" in res.stderr, res.describe()
    assert "1 warning(s)" in res.stdout, res.describe()

    broken = tmp_path / "broken.toml"
    broken.write_text(BROKEN)
    res = check_config(socksify_install, broken)
    assert res.returncode == 1, res.describe()
    assert f"{broken}:3:" in res.stderr and "sideways" in res.stderr, res.describe()
    assert "chain:NAME" in res.stderr, res.describe()          # the accepted form

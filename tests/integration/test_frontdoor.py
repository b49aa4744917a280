"""The SOCKS front door with independent clients: curl's own SOCKS4/4a/5 code and
python-socks from PyPI, through the lab's danted chain; per-app rules by the
kernel's socket table; pipelining, malformed and idle clients; loops."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import sys
import textwrap
from pathlib import Path

import pytest

import lab as lablib

pytestmark = pytest.mark.lab


def policy(lab: lablib.Lab, tmp_path: Path, extra: str = "") -> Path:
    """curl and python through a 3-hop chain whose last hop speaks SOCKS5 (so names
    are resolved in the proxy zone), everything else blocked."""
    f = tmp_path / "frontdoor.toml"
    h = lab.hops
    f.write_text(textwrap.dedent(f"""\
        [chains.c3]
        hops = ["{h[0].url}", "{h[1].url}", "socks5://{h[2].host}:{h[2].port}"]

        [[rules]]
        app = ["curl", "python3*"]
        action = "chain:c3"
        {extra}
        [default]
        action = "block"

        [frontdoor]
        listen = "127.0.0.1:0"
        """))
    return f


def start(sk, pol: Path) -> int:
    res = sk.socksifyd("start", "-c", str(pol))
    assert res.returncode == 0, sk.describe(res)
    code = ("import json; from socksify import client; from socksify.paths import Paths;"
            "print(json.dumps(client.request(Paths.from_env(), {'op': 'status'})))")
    res = sk.lab.client_run([sys.executable, "-c", code], env=sk.env, timeout=30)
    status = json.loads(res.stdout)
    host, port = status["frontdoor"].rsplit(":", 1)
    assert host == "127.0.0.1"
    return int(port)


@pytest.mark.parametrize("flag,by_name", [("--socks4", False), ("--socks4a", True),
                                          ("--socks5", False),
                                          ("--socks5-hostname", True)])
def test_curl_through_the_front_door(lab: lablib.Lab, sk, tmp_path: Path, flag: str,
                                     by_name: bool) -> None:
    port = start(sk, policy(lab, tmp_path))
    m = f"fd-{os.urandom(4).hex()}"
    url = lab.far_url("big.bin", m) if by_name else lab.url("big.bin", m)
    out = tmp_path / "big.bin"
    before = lab.hop_connects()
    res = lab.client_run(["curl", "-q", "-sS", "--max-time", "60", flag,
                          f"127.0.0.1:{port}", "-o", str(out), url], env=sk.env,
                         timeout=90)
    assert res.returncode == 0, sk.describe(res)
    assert lablib.sha256_file(out) == lab.big_sha256
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
    assert all(lab.wait_hop_connects(before, [1, 1, 1])), sk.daemon_log()
    log = sk.daemon_log()
    assert "curl[" in log and "[rule 1" in log, log       # identified as curl
    if by_name:
        assert lab.dns.seen() == [] or lablib.FAR_NAME not in lab.dns.seen()


def test_python_socks_client(lab: lablib.Lab, sk, tmp_path: Path) -> None:
    """python-socks (an independent SOCKS5 client) asks by host name; the name is
    resolved only in the proxy zone."""
    port = start(sk, policy(lab, tmp_path))
    m = f"ps-{os.urandom(4).hex()}"
    code = textwrap.dedent(f"""\
        import hashlib
        from python_socks.sync import Proxy
        s = Proxy.from_url("socks5://127.0.0.1:{port}", rdns=True).connect(
            "{lablib.FAR_NAME}", {lab.http_port}, timeout=30)
        s.sendall(b"GET /small.bin?m={m} HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        print(hashlib.sha256(data.split(b"\\r\\n\\r\\n", 1)[1]).hexdigest())
        """)
    res = lab.client_run([sys.executable, "-c", code], env=sk.env, timeout=60)
    assert res.returncode == 0, sk.describe(res)
    assert res.stdout.strip() == lab.small_sha256
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
    assert lablib.FAR_NAME not in lab.dns.seen()


def test_rules_apply_to_the_program_behind_the_request(lab: lablib.Lab, sk,
                                                       tmp_path: Path) -> None:
    """A copy of curl under another name is another program to the policy: no rule
    names it, so the default blocks it (SOCKS5 'not allowed'), nothing is fetched."""
    port = start(sk, policy(lab, tmp_path))
    other = tmp_path / "fetcher"
    shutil.copy("/usr/bin/curl", other)
    m = f"blk-{os.urandom(4).hex()}"
    res = lab.client_run([str(other), "-q", "-sS", "--max-time", "20", "--socks5",
                          f"127.0.0.1:{port}", "-o", "/dev/null", lab.url("small.bin", m)],
                         env=sk.env, timeout=60)
    assert res.returncode != 0, sk.describe(res)
    assert lab.http.requests_for(m) == []
    assert "fetcher[" in sk.daemon_log() and "blocked" in sk.daemon_log()


def raw(lab: lablib.Lab, sk, script: str) -> dict[str, object]:
    res = lab.client_run([sys.executable, "-c", textwrap.dedent(script)], env=sk.env,
                         timeout=60)
    assert res.returncode == 0, sk.describe(res)
    return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_pipelined_request_and_data(lab: lablib.Lab, sk, tmp_path: Path) -> None:
    """SOCKS4 request and the HTTP request in one write: nothing is dropped."""
    port = start(sk, policy(lab, tmp_path))
    m = f"pipe-{os.urandom(4).hex()}"
    out = raw(lab, sk, f"""
        import hashlib, json, socket
        s = socket.create_connection(("127.0.0.1", {port}))
        req = bytes([4, 1]) + ({lab.http_port}).to_bytes(2, "big") + \\
            socket.inet_aton("{lab.far_ip}") + b"\\0"
        s.sendall(req + b"GET /small.bin?m={m} HTTP/1.0\\r\\nHost: x\\r\\n\\r\\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
        reply, body = data[:8], data[8:].split(b"\\r\\n\\r\\n", 1)[1]
        print(json.dumps({{"code": reply[1], "sha": hashlib.sha256(body).hexdigest()}}))
        """)
    assert out == {"code": 90, "sha": lab.small_sha256}
    assert len(lab.http.requests_for(m)) == 1


def test_malformed_and_idle_clients_are_refused(lab: lablib.Lab, sk,
                                                tmp_path: Path) -> None:
    port = start(sk, policy(lab, tmp_path))
    out = raw(lab, sk, f"""
        import json, socket, time
        res = {{}}
        s = socket.create_connection(("127.0.0.1", {port}))
        s.sendall(bytes([4, 7, 0, 80, 10, 77, 2, 3]) + b"\\0")   # command 7
        res["bad4"] = list(s.recv(8))
        s = socket.create_connection(("127.0.0.1", {port}))
        s.sendall(bytes([5, 1, 0]))
        s.recv(2)
        s.sendall(bytes([5, 1, 0, 9, 1, 2, 3, 4, 0, 80]))        # address type 9
        res["bad5"] = list(s.recv(10))
        s = socket.create_connection(("127.0.0.1", {port}))
        s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")                  # not SOCKS at all
        res["http"] = list(s.recv(10))
        s = socket.create_connection(("127.0.0.1", {port}))
        s.settimeout(30)
        t = time.monotonic()
        s.sendall(bytes([5]))                                     # then silence
        res["idle"] = [list(s.recv(10)), round(time.monotonic() - t)]
        print(json.dumps(res))
        """)
    assert out["bad4"] == [0, 91, 0, 0, 0, 0, 0, 0]
    assert out["bad5"][:2] == [5, 8]                  # address type not supported
    assert out["http"] == []                          # closed without a word
    idle = out["idle"]
    assert isinstance(idle, list) and idle[0] == [] and 5 <= idle[1] <= 25
    log = sk.daemon_log()
    assert "neither SOCKS4 nor SOCKS5" in log and "no complete request" in log


def test_chain_back_into_own_front_door_is_a_loop(lab: lablib.Lab, sk,
                                                  tmp_path: Path) -> None:
    """A chain whose hop is this daemon's own front door would recurse forever: the
    inner request is refused (ELOOP) and the program gets ECONNREFUSED."""
    pol = tmp_path / "loop.toml"
    pol.write_text('[frontdoor]\nlisten = "127.0.0.1:0"\n')
    port = start(sk, pol)
    pol.write_text(textwrap.dedent(f"""\
        [chains.loop]
        hops = ["socks5://127.0.0.1:{port}"]
        [default]
        action = "chain:loop"
        [frontdoor]
        listen = "127.0.0.1:{port}"
        """))
    assert sk.socksifyd("reload").returncode == 0, sk.daemon_log()
    c = sk.bare_client("connect", lab.far_ip, str(lab.http_port))
    assert not c.ok and c["errno"] == errno.ECONNREFUSED, c.describe()
    assert "loop" in sk.daemon_log()


@pytest.mark.parametrize("data_path,seen", [("relay", "python"), ("handoff", "curl")])
def test_shim_chains_through_another_daemons_front_door(lab: lablib.Lab, sk,
                                                        tmp_path: Path, data_path: str,
                                                        seen: str) -> None:
    """socksify's daemon uses a second daemon's front door as its hop. With the relay
    the front door's client is the second daemon (a python process); with handoff it
    is curl itself, whose own socket was connected to the hop."""
    port = start(sk, policy(lab, tmp_path))
    other = tmp_path / "rt2"
    other.mkdir(mode=0o700)
    env = {"SOCKSIFY_RUNTIME_DIR": str(other)}
    m = f"via-{os.urandom(4).hex()}"
    try:
        res = sk.run(["curl", "-q", "-sS", "--max-time", "60", "-o", "/dev/null",
                      "-w", "%{http_code}", lab.url("small.bin", m)],
                     via=[f"socks5://127.0.0.1:{port}"], env=env,
                     opts=["-v", "--data-path", data_path])
        assert res.returncode == 0 and res.stdout == "200", sk.describe(res)
        assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
        log = sk.daemon_log()   # the front door's daemon: who connected to it
        other = "curl" if seen == "python" else "python"
        assert f"{seen}" in log and f"] {other}" not in log, log
    finally:
        lab.client_run([sk.install.socksifyd, "stop"], env={**sk.env, **env}, timeout=30)


def test_front_door_is_loopback_only(tmp_path: Path) -> None:
    from socksify.errors import ConfigError
    from socksify.policy import Policy
    with pytest.raises(ConfigError) as info:
        Policy.parse('[frontdoor]\nlisten = "0.0.0.0:1080"\n', "p.toml")
    assert "not a loopback address" in str(info.value)
    assert socket  # the module is used above; keeps linters quiet


def test_danted_chains_through_a_front_door(lab: lablib.Lab, sk, tmp_path: Path) -> None:
    """A daemon in the proxy zone serves its front door on that zone's loopback; the
    client's chain asks danted (hop 1) to connect to it, and it carries the request
    on directly: danted -> front door -> far server. danted may open its sockets as its
    unprivileged user (nobody), and the front door serves another uid only through
    `unidentified`: this policy serves it on purpose."""
    rt = tmp_path / "proxyzone"
    rt.mkdir(mode=0o700)
    pol = rt / "direct.toml"
    pol.write_text('[default]\naction = "direct"\n[frontdoor]\nlisten = "127.0.0.1:0"\n'
                   'unidentified = "direct"\n')
    env = lablib.clean_env({"SOCKSIFY_RUNTIME_DIR": str(rt)})
    res = lab.ns_run(lab.proxy_ns, [sk.install.socksifyd, "start", "-c", str(pol)], env=env,
                     timeout=30)
    assert res.returncode == 0, res.describe()
    try:
        code = ("import json; from socksify import client; from socksify.paths import "
                "Paths; print(client.request(Paths.from_env(), {'op': 'status'})"
                "['frontdoor'])")
        door = lab.ns_run(lab.proxy_ns, [sys.executable, "-c", code], env=env,
                          timeout=30).stdout.strip()
        port = int(door.rsplit(":", 1)[1])
        m = f"dante-fd-{os.urandom(4).hex()}"
        before = lab.hop_connects()
        c = sk.client("rawfetch", lab.far_ip, str(lab.http_port), f"/small.bin?m={m}",
                      via=[lab.hops[0].url, f"socks5://127.0.0.1:{port}"])
        assert c.ok and c["sha256"] == lab.small_sha256, c.describe()
        targets = lab.hop_targets_since(before)
        assert any(f"127.0.0.1.{port}" in t for t in targets[0]), targets
        assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
        log = (rt / "socksifyd.log").read_text()
        assert f"-> {lab.far_ip}:{lab.http_port} via direct" in log, log
    finally:
        lab.ns_run(lab.proxy_ns, [sk.install.socksifyd, "stop"], env=env, timeout=30)

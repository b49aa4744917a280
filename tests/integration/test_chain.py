"""socksify end to end through the lab's danted hops: the bytes must really cross the
chain (hop logs, the far server's view of the client address) and arrive intact."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import lab as lablib

pytestmark = pytest.mark.lab


def marker(name: str) -> str:
    return f"{name}-{os.urandom(4).hex()}"


def curl(out: Path, url: str) -> list[str]:
    return ["curl", "-q", "-sS", "--connect-timeout", "20", "--max-time", "60", "-o",
            str(out), url]


def assert_chain(the_lab: lablib.Lab, before: list[int], n_hops: int, tunnels: int = 1) -> None:
    """Hops 1..n_hops each opened at least `tunnels` tunnels since `before`, hop i to hop
    i+1 and the last to the far HTTP server; hops after n_hops opened none."""
    expected = [tunnels if i < n_hops else 0 for i in range(3)]
    deltas = the_lab.wait_hop_connects(before, expected)
    targets = the_lab.hop_targets_since(before)
    logs = "\n".join(f"hop {h.index}: {h.read_log()[-1500:]}" for h in the_lab.hops)
    for i in range(3):
        if i >= n_hops:
            assert deltas[i] == 0, f"hop {i + 1} was not in the chain:\n{logs}"
            continue
        want = the_lab.far_http_addr if i == n_hops - 1 else the_lab.hop_addr(i + 2)
        assert targets[i].count(want) >= tunnels, \
            f"hop {i + 1} should have opened {tunnels} tunnel(s) to {want}; " \
            f"it opened {targets[i]}\n{logs}"


def test_direct_connection_to_far_fails(lab: lablib.Lab) -> None:
    """Without socksify the client zone cannot reach the far zone (bounded)."""
    m = marker("direct")
    res = lab.client_run([sys.executable, str(Path(__file__).parent / "netclient.py"),
                          "connect", lab.far_ip, str(lab.http_port)],
                         env=lablib.clean_env({"NETCLIENT_TIMEOUT": "3"}), timeout=60)
    # the proxy zone does not forward: the SYN is dropped (timeout) or answered with
    # an ICMP error -- either way no connection
    assert res.returncode == 1 and '"ok": false' in res.stdout, res.describe()
    res = lab.client_run(["curl", "-q", "-sS", "--connect-timeout", "2", "--max-time", "4",
                          "-o", "/dev/null", lab.url("small.bin", m)], timeout=30)
    assert res.returncode in (7, 28), res.describe()
    assert lab.http.requests_for(m) == []


def test_curl_one_hop(lab: lablib.Lab, sk, tmp_path: Path) -> None:
    m = marker("curl1")
    out = tmp_path / "big.bin"
    before = lab.hop_connects()
    res = sk.run(curl(out, lab.url("big.bin", m)), via=sk.hops(1), opts=["-v"])
    assert res.returncode == 0, sk.describe(res)
    assert lablib.sha256_file(out) == lab.big_sha256, sk.describe(res)
    assert_chain(lab, before, 1)
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
    # -v: one line per connection on stderr naming the target
    lines = [ln for ln in res.stderr.splitlines() if lab.far_ip in ln]
    assert len(lines) == 1, sk.describe(res)


def test_curl_three_hops(lab: lablib.Lab, sk, tmp_path: Path) -> None:
    m = marker("curl3")
    out = tmp_path / "big.bin"
    before = lab.hop_connects()
    res = sk.run(curl(out, lab.url("big.bin", m)), via=sk.hops(3))
    assert res.returncode == 0, sk.describe(res)
    assert lablib.sha256_file(out) == lab.big_sha256
    assert_chain(lab, before, 3)
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]


@pytest.mark.parametrize("client", ["fetch", "rawfetch"])
def test_python_client_three_hops(lab: lablib.Lab, sk, client: str) -> None:
    m = marker(f"py3{client}")
    before = lab.hop_connects()
    if client == "fetch":
        c = sk.client("fetch", lab.url("big.bin", m), via=sk.hops(3))
    else:
        c = sk.client("rawfetch", lab.far_ip, str(lab.http_port), f"/big.bin?m={m}",
                      via=sk.hops(3))
    assert c.ok, c.describe()
    assert c["sha256"] == lab.big_sha256 and c["bytes"] == lablib.BIG_SIZE
    assert c.res.returncode == 0, c.describe()
    assert_chain(lab, before, 3)
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]


@pytest.mark.parametrize("where", ["inner", "outer"])
def test_ld_bind_now(lab: lablib.Lab, sk, tmp_path: Path, where: str) -> None:
    """The shim works when every symbol is bound at load time (LD_BIND_NOW=1), set for the
    command only (env LD_BIND_NOW=1 curl) or for socksify and everything under it."""
    m = marker(f"bindnow{where}")
    out = tmp_path / "big.bin"
    before = lab.hop_connects()
    cmd = curl(out, lab.url("big.bin", m))
    if where == "inner":
        res = sk.run(["env", "LD_BIND_NOW=1", *cmd], via=sk.hops(3))
    else:
        res = sk.run(cmd, via=sk.hops(3), env={"LD_BIND_NOW": "1"})
    assert res.returncode == 0, sk.describe(res)
    assert lablib.sha256_file(out) == lab.big_sha256
    assert_chain(lab, before, 3)
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]


def test_fifty_concurrent_connections(lab: lablib.Lab, sk) -> None:
    n = 50
    m = marker("threads")
    before = lab.hop_connects()
    c = sk.client("threads", str(n), lab.url("small.bin", m), via=sk.hops(3), opts=(),
                  timeout=150)
    results = c["results"] or []
    bad = [r for r in results if not (r.get("ok") and r.get("sha256") == lab.small_sha256)]
    assert len(results) == n and not bad, \
        f"{len(bad)} of {n} failed or were corrupt, e.g. {bad[:3]}\n{c.describe()}"
    assert c.res.returncode == 0, c.describe()
    assert_chain(lab, before, 3, tunnels=n)
    reqs = lab.http.requests_for(m)
    assert len(reqs) == n and {r.client for r in reqs} == {lab.proxy_far_ip}


def test_getpeername_reports_original_destination(lab: lablib.Lab, sk) -> None:
    c = sk.client("connect", lab.far_ip, str(lab.echo.port), via=sk.hops(3))
    assert c.ok, c.describe()
    assert c["peer"] == [lab.far_ip, lab.echo.port], c.describe()


def test_near_host_goes_through_the_chain_too(lab: lablib.Lab, sk) -> None:
    """The near witness is directly reachable from the client zone; under socksify the
    connection must still come from the hop (10.77.1.2), not from the client (10.77.1.1)."""
    before = lab.witness.count()
    hop_before = lab.hop_connects()
    c = sk.client("connect", lab.proxy_near_ip, str(lab.witness.port), via=sk.hops(1))
    assert c.ok, c.describe()
    lablib.wait_until(lambda: lab.witness.count() >= before + 1, 5, "the witness to count")
    assert lab.witness.count() == before + 1
    assert lab.witness.accepted[-1][0] == lab.proxy_near_ip, lab.witness.accepted[-3:]
    targets = lab.hop_targets_since(hop_before)
    assert targets[0] == [f"{lab.proxy_near_ip}.{lab.witness.port}"], targets

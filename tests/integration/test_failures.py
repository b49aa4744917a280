"""Failures: dead hops, silent hops, a killed daemon. The app must see the right errno,
and nothing may ever go direct (fail closed)."""

from __future__ import annotations

import errno
import os
import signal
import sys
from pathlib import Path

import pytest

import lab as lablib
from conftest import assert_errno

pytestmark = pytest.mark.lab

NETCLIENT = str(Path(__file__).parent / "netclient.py")


def marker(name: str) -> str:
    return f"{name}-{os.urandom(4).hex()}"


def curl(out: Path, url: str) -> list[str]:
    return ["curl", "-q", "-sS", "--connect-timeout", "30", "--max-time", "60", "-o",
            str(out), url]


def test_dynamic_skips_dead_hop(lab: lablib.Lab, sk, tmp_path: Path) -> None:
    """hop1, a port nobody listens on, hop3: dynamic leaves the dead one out."""
    m = marker("dyn")
    out = tmp_path / "big.bin"
    before = lab.hop_connects()
    via = [lab.hops[0].url, lab.dead_hop_url, lab.hops[2].url]
    res = sk.run(curl(out, lab.url("big.bin", m)), via=via, strategy="dynamic", opts=["-v"])
    assert res.returncode == 0, sk.describe(res)
    assert lablib.sha256_file(out) == lab.big_sha256
    targets = lab.hop_targets_since(before)
    assert lab.hop_addr(3) in targets[0], targets      # hop1 -> hop3 (dead hop skipped)
    assert lab.far_http_addr in targets[2], targets     # hop3 -> far
    assert targets[1] == [], targets                   # hop2 was never in this chain
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]


@pytest.mark.parametrize("dead_at", [1, 2, 3])
def test_strict_dead_hop_is_refused(lab: lablib.Lab, sk, dead_at: int) -> None:
    """strict with a dead hop anywhere in the chain: the app's connect() fails with
    ECONNREFUSED (hop 1 refuses the TCP connect, or an earlier hop answers 91)."""
    m = marker(f"strict{dead_at}")
    via = [h.url for h in lab.hops]
    via[dead_at - 1] = lab.dead_hop_url
    c = sk.client("rawfetch", lab.far_ip, str(lab.http_port), f"/small.bin?m={m}", via=via,
                  strategy="strict")
    assert_errno(c, errno.ECONNREFUSED)
    assert lab.http.requests_for(m) == []


def test_stopped_hop(lab: lablib.Lab, sk, tmp_path: Path) -> None:
    """Stop the real hop2: dynamic over the three hops still fetches (via hop1, hop3);
    strict fails with ECONNREFUSED. hop2 is restarted afterwards."""
    lab.stop_hop(2)
    try:
        m = marker("stopped")
        out = tmp_path / "big.bin"
        before = lab.hop_connects()
        res = sk.run(curl(out, lab.url("big.bin", m)), via=sk.hops(3), strategy="dynamic")
        assert res.returncode == 0, sk.describe(res)
        assert lablib.sha256_file(out) == lab.big_sha256
        targets = lab.hop_targets_since(before)
        assert lab.hop_addr(3) in targets[0] and lab.far_http_addr in targets[2], targets
        assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]

        m = marker("stoppedstrict")
        c = sk.client("rawfetch", lab.far_ip, str(lab.http_port), f"/small.bin?m={m}",
                      via=sk.hops(3), strategy="strict")
        assert_errno(c, errno.ECONNREFUSED)
        assert lab.http.requests_for(m) == []
    finally:
        lab.start_hop(2)


@pytest.mark.parametrize("silent_at", [1, 2])
def test_silent_hop_times_out(lab: lablib.Lab, sk, silent_at: int) -> None:
    """A hop that accepts and never answers: ETIMEDOUT after the per-hop timeout."""
    via = [lab.hops[0].url, lab.silent_hop_url] if silent_at == 2 else [lab.silent_hop_url]
    c = sk.client("connect", lab.far_ip, str(lab.http_port), via=via,
                  opts=("-v", "--timeout", "1"), timeout=60)
    assert_errno(c, errno.ETIMEDOUT)


def assert_no_direct_connection(lab: lablib.Lab, sk, witness_before: int) -> None:
    """Control: the same client without the shim does reach the witness. The witness
    accepts in order, so once it has counted this later connection it would have counted
    any earlier leaked one: the count must be exactly one more."""
    res = lab.client_run([sys.executable, NETCLIENT, "connect", lab.proxy_near_ip,
                          str(lab.witness.port)], env=sk.env, timeout=30)
    assert res.returncode == 0, res.describe()
    lablib.wait_until(lambda: lab.witness.count() >= witness_before + 1, 5,
                      "the witness to count the control connection")
    assert lab.witness.count() == witness_before + 1, "a shimmed connect went direct"


def _wait_dead(pid: int) -> None:
    def dead() -> bool:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return True
        return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")
    lablib.wait_until(dead, 10, f"pid {pid} to die")


def test_killed_daemon_fails_closed(lab: lablib.Lab, sk) -> None:
    """kill -9 the daemon; a shimmed program (LD_PRELOAD, not via socksify, which would
    start a new daemon) must get ECONNREFUSED and must not connect directly -- neither to
    the near witness (directly reachable) nor to the far server."""
    res = sk.run(["true"], via=sk.hops(1))
    assert res.returncode == 0, sk.describe(res)
    pid = sk.daemon_pid()
    assert pid is not None, f"no pidfile {sk.pidfile}\n{sk.describe(res)}"
    os.kill(pid, signal.SIGKILL)
    _wait_dead(pid)

    witness_before = lab.witness.count()
    c = sk.bare_client("connect", lab.proxy_near_ip, str(lab.witness.port))
    assert_errno(c, errno.ECONNREFUSED)
    m = marker("killed")
    c = sk.bare_client("rawfetch", lab.far_ip, str(lab.http_port), f"/small.bin?m={m}")
    assert_errno(c, errno.ECONNREFUSED)
    assert lab.http.requests_for(m) == []

    assert_no_direct_connection(lab, sk, witness_before)


def test_no_daemon_ever_fails_closed(lab: lablib.Lab, sk) -> None:
    """A shimmed program whose runtime dir never had a daemon: ECONNREFUSED, no leak."""
    assert not (sk.runtime_dir / "control.sock").exists()
    witness_before = lab.witness.count()
    c = sk.bare_client("connect", lab.proxy_near_ip, str(lab.witness.port))
    assert_errno(c, errno.ECONNREFUSED)
    assert_no_direct_connection(lab, sk, witness_before)

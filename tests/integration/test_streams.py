"""Stream semantics through the chain: half-close, non-blocking sockets in an event loop."""

from __future__ import annotations

import os

import pytest

import lab as lablib

pytestmark = pytest.mark.lab


@pytest.mark.parametrize("nbytes", [0, 1, 3_000_000])
def test_half_close_is_carried_through(lab: lablib.Lab, sk, nbytes: int) -> None:
    """send, shutdown(SHUT_WR), then read: the far echo server hashes everything up to
    EOF and replies; the reply must arrive after our EOF reached it, and match."""
    before = lab.echo.count()
    c = sk.client("halfclose", lab.far_ip, str(lab.echo.port), str(nbytes), via=sk.hops(3))
    assert c.ok, c.describe()
    assert c["sent_bytes"] == nbytes
    assert c["reply"].split() == [c["sent_sha256"], str(nbytes)], c.describe()
    assert lab.echo.count() == before + 1
    assert lab.echo.accepted[-1][0] == lab.proxy_far_ip


@pytest.mark.parametrize("hops", [1, 3])
def test_asyncio_client(lab: lablib.Lab, sk, hops: int) -> None:
    m = f"async-{os.urandom(4).hex()}"
    c = sk.client("asyncfetch", lab.far_ip, str(lab.http_port), f"/small.bin?m={m}",
                  via=sk.hops(hops))
    assert c.ok, c.describe()
    assert c["socket_blocking"] is False
    assert c["sha256"] == lab.small_sha256 and c["bytes"] == lablib.SMALL_SIZE
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]


def test_no_fd_leak_and_flags_kept(lab: lablib.Lab, sk) -> None:
    """200 socksified connects on non-blocking sockets: the program ends with exactly
    the fds it started with, every socket's file flags are as the program set them
    (O_NONBLOCK kept), and every body arrived intact."""
    c = sk.client("fdcheck", "200", lab.far_ip, str(lab.http_port), "/small.bin",
                  via=sk.hops(1), opts=(), timeout=150)
    assert c.ok, c.describe()
    assert c["fds_after"] == c["fds_before"], c.describe()
    assert c["control_connections"] == 1, c.describe()   # kept, one per thread
    assert c["sha256"] == [lab.small_sha256]
    (before, after), = c["flags"]
    assert before == after and before & os.O_NONBLOCK, c["flags"]


def test_fork_after_use(lab: lablib.Lab, sk) -> None:
    """A process that used the shim, then forked: parent and child both connect through
    the chain at the same time."""
    m = f"fork-{os.urandom(4).hex()}"
    c = sk.client("forkfetch", lab.far_ip, str(lab.http_port), f"/small.bin?m={m}",
                  via=sk.hops(3), opts=(), timeout=120)
    assert c.ok, c.describe()
    assert c["sha256"] == [lab.small_sha256] * 3, c.describe()
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip] * 3

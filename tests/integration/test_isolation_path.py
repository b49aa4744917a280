"""The isolation path: a program the shim cannot load into (static busybox, a static
C program making raw system calls) runs in its own network namespace, where nft
rules redirect every TCP connection to the daemon, which carries it through the
policy's chain. Watched on the wire: the near witness (directly reachable from the
client zone) must see nothing from the client zone, the recording resolver no query,
the far server only the proxy zone, the hops' logs the chain."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

import lab as lablib
from conftest import skip_or_fail

pytestmark = pytest.mark.lab

PROGRAMS = Path(__file__).resolve().parent.parent / "programs"
BUSYBOX = "/usr/bin/busybox"


@pytest.fixture(scope="module")
def rawnet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/programs/rawnet.c, static: the shim cannot load into it."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        skip_or_fail("no C compiler (cc) to build tests/programs/rawnet.c")
    out = tmp_path_factory.mktemp("rawnet")
    out.chmod(0o755)
    exe = out / "rawnet"
    r = subprocess.run([cc, "-static", "-O1", "-Wall", "-o", str(exe),
                        str(PROGRAMS / "rawnet.c")],
                       capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        skip_or_fail(f"cc -static failed (libc6-dev's libc.a missing?): {r.stderr[-400:]}")
    return exe


@pytest.fixture
def busybox() -> str:
    if not os.access(BUSYBOX, os.X_OK):
        skip_or_fail(f"{BUSYBOX} missing (package busybox-static)")
    return BUSYBOX


def three_hops(lab: lablib.Lab) -> list[str]:
    """A SOCKS4 > SOCKS4a > SOCKS5 chain through the lab's three danted hops."""
    h = lab.hops
    return [f"socks4://{h[0].host}:{h[0].port}", f"socks4a://{h[1].host}:{h[1].port}",
            f"socks5://{h[2].host}:{h[2].port}"]


def witness_count(lab: lablib.Lab) -> int:
    assert lab.witness is not None
    time.sleep(0.3)   # let the accept thread count anything that got through
    return lab.witness.count()


def from_client_zone(lab: lablib.Lab) -> list[tuple[str, int]]:
    assert lab.witness is not None
    return [a for a in lab.witness.accepted if a[0] == lab.client_ip]


def test_static_busybox_wget_by_address_through_three_hops(
        lab: lablib.Lab, sk, busybox: str, tmp_path: Path) -> None:
    """No --isolate: socksify sees a static program and takes the isolation path by
    itself (-v says so); busybox wget's connection crosses all three hops."""
    m = f"isop-{os.urandom(4).hex()}"
    out = tmp_path / "small.bin"
    dns_before, hops_before = list(lab.dns.seen()), lab.hop_connects()
    witness_before = from_client_zone(lab)
    res = sk.run([busybox, "wget", "-q", "-O", str(out), lab.far_ip_url("small.bin", m)]
                 if hasattr(lab, "far_ip_url") else
                 [busybox, "wget", "-q", "-O", str(out),
                  f"http://{lab.far_ip}:{lab.http_port}/small.bin?m={m}"],
                 via=three_hops(lab), opts=["-v"])
    assert res.returncode == 0, sk.describe(res)
    assert "isolated network namespace" in res.stderr, sk.describe(res)
    assert lablib.sha256_file(out) == lab.small_sha256
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
    assert lab.wait_hop_connects(hops_before, [1, 1, 1]) == [1, 1, 1]
    assert lab.dns.seen() == dns_before, f"DNS leak: {lab.dns.seen()[len(dns_before):]}"
    witness_count(lab)
    assert from_client_zone(lab) == witness_before
    log = sk.daemon_log(20000)
    assert "busybox" in log and "isolated" in log, log


def test_raw_syscall_static_program_is_carried(lab: lablib.Lab, sk, rawnet: Path,
                                               tmp_path: Path) -> None:
    """syscall(SYS_connect) from a static program: carried through the chain;
    getpeername() reports the address it connected to."""
    m = f"isop-{os.urandom(4).hex()}"
    out = tmp_path / "body"
    res = sk.run([str(rawnet), "get", lab.far_ip, str(lab.http_port),
                  f"/small.bin?m={m}", str(out)], via=three_hops(lab))
    assert res.returncode == 0, sk.describe(res)
    lines = res.stdout.splitlines()
    assert "connect 0" in lines and f"peer {lab.far_ip} {lab.http_port}" in lines, \
        sk.describe(res)
    assert lablib.sha256_file(out) == lab.small_sha256
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]

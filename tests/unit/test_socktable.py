"""The uid behind a loopback TCP connection, from the kernel's socket table: exact
sock_diag lookups and the /proc/net/tcp fallback give the same answer, for IPv4 and
IPv6, for our own sockets and (as root) for another user's; a socket not in the table
is None. And the admission caps on connections waiting to prove themselves."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest
from conftest import skip_or_fail

from socksify import sockdiag
from socksify.listeners import socktable
from socksify.listeners.admission import Gate
from socksify.policy import Policy

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux")


def _diag_uid(peer: tuple[str, int], ours: tuple[str, int]) -> int | None:
    found = sockdiag.lookup(socket.IPPROTO_TCP, peer, ours)
    return None if found is None else found.uid


def _proc_uid(peer: tuple[str, int], ours: tuple[str, int]) -> int | None:
    found = sockdiag.proc_lookup(socket.IPPROTO_TCP, peer, ours)
    return None if found is None else found.uid


def _pair(family: int, host: str) -> tuple[socket.socket, socket.socket, socket.socket]:
    lst = socket.socket(family)
    lst.bind((host, 0))
    lst.listen()
    cli = socket.create_connection(lst.getsockname()[:2])
    acc, _ = lst.accept()
    return lst, cli, acc


@pytest.mark.parametrize("family,host", [(socket.AF_INET, "127.0.0.1"),
                                         (socket.AF_INET6, "::1")])
def test_own_connection(family: int, host: str) -> None:
    try:
        socks = _pair(family, host)
    except OSError as exc:
        pytest.skip(f"no {host}: {exc}")
    try:
        acc = socks[2]
        peer, ours = acc.getpeername()[:2], acc.getsockname()[:2]
        assert _diag_uid(peer, ours) == os.getuid()
        assert _proc_uid(peer, ours) == os.getuid()
        assert socktable.peer_uid(peer, ours) == os.getuid()
        # a 4-tuple nobody holds
        gone = (host, 1)
        assert _diag_uid(gone, ours) is None
        assert _proc_uid(gone, ours) is None
        # nor a listener's: the kernel's lookup of a 4-tuple it does not have falls
        # back to the listener on its local port
        lst_port = socks[0].getsockname()[1]
        assert sockdiag.lookup(socket.IPPROTO_TCP, (host, lst_port), (host, 1)) is None
        assert socktable.peer_uid((host, lst_port), ours) is None
    finally:
        for s in socks:
            s.close()


def test_another_users_connection() -> None:
    """The kernel names the other user's uid although its process is unreadable to
    that user's peers: here a nobody process connects to root's listener."""
    if os.getuid() != 0 or shutil.which("setpriv") is None:
        skip_or_fail("needs root and setpriv")
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen()
    code = ("import socket, sys; s = socket.create_connection(('127.0.0.1', "
            f"{lst.getsockname()[1]})); sys.stdin.read()")
    proc = subprocess.Popen(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             "/usr/bin/python3", "-c", code], stdin=subprocess.PIPE)
    try:
        lst.settimeout(20)
        acc, _ = lst.accept()
        peer, ours = acc.getpeername(), acc.getsockname()
        assert _diag_uid(peer, ours) == 65534
        assert _proc_uid(peer, ours) == 65534
        # and our own end of it is root's
        assert _diag_uid(ours, peer) == 0
        acc.close()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(20)
        lst.close()


def test_caps_keep_room_for_the_owner() -> None:
    gate = Gate(owner=1000, limit=512)
    assert (gate.total_cap, gate.others_cap, gate.per_uid_cap) == (128, 64, 16)
    flood = [gate.admit(2000) for _ in range(600)]
    assert sum(t is not None for t in flood) == 16              # per uid
    others = [gate.admit(uid) for uid in range(3000, 3100) for _ in range(16)]
    assert sum(t is not None for t in others) == 64 - 16         # all others together
    assert gate.admit(None) is None                              # unknown: an other
    mine = [gate.admit(1000) for _ in range(200)]
    assert sum(t is not None for t in mine) == 128 - 64          # the owner's room
    for t in flood + others + mine:
        if t is not None:
            t.release()
            t.release()                                          # twice: no effect
    assert gate.total == 0 and gate.others == 0 and gate.waiting == {}


def test_unidentified_decides_before_any_rule() -> None:
    """A port-only rule to a chain must not serve another user's front-door request:
    the `unidentified` action decides alone (block unless the policy says otherwise)."""
    text = """\
[chains.anon]
hops = ["socks5://owner:pw@10.0.0.5:1080"]
[[rules]]
port = [80, 443]
action = "chain:anon"
[default]
action = "chain:anon"
"""
    pol = Policy.parse(text, "p.toml").for_unidentified()
    d = pol.decide(None, None, 80, "example.org")
    assert (d.action.kind, d.rule) == ("block", "unidentified")
    pol = Policy.parse(text + '[frontdoor]\nunidentified = "direct"\n',
                       "p.toml").for_unidentified()
    assert pol.decide(None, None, 443, "example.org").action.kind == "direct"

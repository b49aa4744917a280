"""Carried datagrams from a Windows program under Wine (issue 19, docs/windows.md): a
UDP client (clients/udpecho.c) under the DLL sends to a far UDP echo server through
SOCKS5 chains of 1 and 3 danted hops configured for UDP (the hops, the far servers and
the nft witness are test_udp_chain.py's), with a Linux daemon whose rule says
`udp = "chain"`. Each way of sending and receiving (sendto/recvfrom, WSASendTo/
WSARecvFrom, WSASendMsg/WSARecvMsg, connect + send/recv, WSAConnect + WSASend/WSARecv)
gets its echoes unchanged, with the far address as their source; the far server saw
only the last hop; nothing left the client zone around the chain; every hop relayed
UDP. With the daemon gone the send fails closed and nothing is sent."""

from __future__ import annotations

import secrets
import textwrap
import time
from pathlib import Path

import pytest

import lab as lablib
from integration.test_udp_chain import FarUdp, UdpHops, Witness
from integration.test_udp_chain import far, udp_hops, witness  # noqa: F401 (fixtures)

from .conftest import Win

pytestmark = pytest.mark.lab

WSAECONNREFUSED = 10061
WSAEOPNOTSUPP = 10045
MODES = ["sendto", "WSASendTo", "WSASendMsg", "connect", "WSAConnect", "WSARecvEx",
         "ReadFile"]
CONNECTED = {"connect", "WSAConnect", "WSARecvEx", "ReadFile"}


def start_carrying(win: Win, tmp_path: Path, hops: list[str]) -> None:
    """The client zone's Linux daemon with one rule: everything through the chain of
    `hops`, datagrams carried."""
    listed = ", ".join(f'"{h}"' for h in hops)
    pol = tmp_path / "udp.toml"
    pol.write_text(textwrap.dedent(f"""\
        [chains.u]
        hops = [{listed}]

        [[rules]]
        action = "chain:u"
        udp = "chain"
        """))
    res = win.sk.socksifyd("start", "-c", str(pol))
    assert res.returncode == 0, win.sk.describe(res)
    lablib.wait_until(lambda: (win.sk.runtime_dir / "control.tcp").exists(), 10,
                      "the daemon's control.tcp")


@pytest.mark.parametrize("n", [1, 3])
def test_windows_udp_through_a_chain(lab: lablib.Lab, win: Win, tmp_path: Path,
                                     udp_hops: UdpHops, far: FarUdp, witness: Witness,
                                     n: int) -> None:
    """Every way of sending and receiving, through n hops: three echoes each, from
    the far address (getpeername names it on a connected socket); the far server saw
    the proxy zone only, three datagrams per run; the witness counted nothing."""
    asked_before = len(lab.dns.seen()) if lab.dns is not None else 0
    start_carrying(win, tmp_path, [udp_hops.url(i) for i in range(n)])
    far_addr = f"{lablib.FAR_IP}:{far.echo_port}"
    runs = [(mode, "0") for mode in MODES] + [("sendto", "1"), ("connect", "1"),
                                              ("thread", "0")]
    for mode, peek in runs:
        before = len(far.seen())
        marker = f"w{secrets.token_hex(6)}"
        res = win.run("udpecho", [lablib.FAR_IP, str(far.echo_port), marker],
                      env={"UDPMODE": mode, "UDPPEEK": peek})
        line = res.result_line()
        assert res.returncode == 0 and line[:2] == ["RESULT", "ok"], \
            f"{mode} (peek {peek})\n{win.describe(res)}"
        assert line[3] == far_addr, win.describe(res)
        connected = mode in CONNECTED
        assert line[4] == (far_addr if connected else "-"), win.describe(res)
        assert "CARRY" in res.stderr, win.describe(res)    # SOCKSIFY_LOG=2
        seen = far.seen()[before:]
        assert [ip for ip, _ in seen] == [lablib.PROXY_FAR_IP] * 3, (mode, seen)
    assert witness.packets() == 0, "a datagram left the client zone around the chain"
    assert lab.dns is None or lablib.FAR_NAME not in " ".join(lab.dns.seen()[asked_before:])
    for i in range(n):
        assert "udp" in udp_hops.log(i).lower(), udp_hops.log(i)


def test_windows_udp_fails_closed_without_the_daemon(lab: lablib.Lab, win: Win,
                                                    tmp_path: Path, udp_hops: UdpHops,
                                                    far: FarUdp,
                                                    witness: Witness) -> None:
    """The program starts under a daemon that would carry its datagrams, which then
    stops: its first sendto fails with WSAECONNREFUSED; the far server and the
    witness see nothing."""
    start_carrying(win, tmp_path, [udp_hops.url(0)])
    res = win.run_past_stop("udpecho", [lablib.FAR_IP, str(far.echo_port), "gone"],
                            via=())
    assert res.result_line()[:4] == ["RESULT", "fail", str(WSAECONNREFUSED), "send"], \
        res.describe()
    time.sleep(0.5)
    assert far.seen() == []
    assert witness.packets() == 0


def test_overlapped_datagrams_are_refused_not_leaked(lab: lablib.Lab, win: Win,
                                                     tmp_path: Path,
                                                     udp_hops: UdpHops, far: FarUdp,
                                                     witness: Witness) -> None:
    """An overlapped WSASendTo to a carried destination is refused with
    WSAEOPNOTSUPP at once (docs/windows.md): nothing reaches the far server or leaves
    around the chain."""
    start_carrying(win, tmp_path, [udp_hops.url(0)])
    res = win.run("udp", [lablib.FAR_IP, str(far.echo_port), "ov.example"],
                  env={"UDPSEND": "overlapped"})
    assert res.result_line()[:3] == ["RESULT", "fail", str(WSAEOPNOTSUPP)], \
        win.describe(res)
    assert "PENDING" not in res.stdout, win.describe(res)
    time.sleep(0.5)
    assert far.seen() == []
    assert witness.packets() == 0


@pytest.mark.parametrize("n", [1, 3])
@pytest.mark.parametrize("mode", ["TransmitFile"])  # Wine 8 has no TransmitPackets
def test_transmit_on_a_carried_socket_is_refused_not_leaked(
        lab: lablib.Lab, win: Win, tmp_path: Path, udp_hops: UdpHops, far: FarUdp,
        witness: Witness, mode: str, n: int) -> None:
    """TransmitPackets/TransmitFile (the pointers WSAIoctl hands out) on a UDP socket
    connected to a carried destination through n hops: refused with WSAEOPNOTSUPP
    (they would hand the carrier the datagram without an envelope); nothing reaches the
    far server or leaves around the chain."""
    start_carrying(win, tmp_path, [udp_hops.url(i) for i in range(n)])
    res = win.run("udpecho", [lablib.FAR_IP, str(far.echo_port), "tx"],
                  env={"UDPMODE": mode})
    assert res.result_line()[:4] == ["RESULT", "fail", str(WSAEOPNOTSUPP), "send"], \
        win.describe(res)
    assert "CARRY" in res.stderr, win.describe(res)    # the connect was carried
    time.sleep(0.5)
    assert far.seen() == []
    assert witness.packets() == 0


@pytest.mark.parametrize("mode", ["sendto", "connect"])
def test_windows_udp_carried_on_across_a_reload(lab: lablib.Lab, win: Win,
                                                tmp_path: Path, udp_hops: UdpHops,
                                                far: FarUdp, mode: str) -> None:
    """A reload voids the daemon's grants (a new policy generation): the program,
    paused after its first echo while the daemon reloads, asks again once (its
    socket's grant, or its connected peer's, is out of date) and its next echoes come
    back through the chain."""
    start_carrying(win, tmp_path, [udp_hops.url(0)])
    go, go_win = win.go_file()
    proc = win.spawn("udpecho", [lablib.FAR_IP, str(far.echo_port), "reload"],
                     opts=("-v",), env={"UDPMODE": mode, "UDPPAUSE": go_win})
    try:
        lablib.wait_until(lambda: len(far.seen()) >= 1, 60, "the first echo")
        res = win.sk.socksifyd("reload")
        assert res.returncode == 0, win.sk.describe(res)
        time.sleep(1)                   # the new generation is written
        go.touch()
        res = proc.wait(120)
    finally:
        proc.kill()
    assert res.result_line()[:2] == ["RESULT", "ok"], win.describe(res)
    assert res.stderr.count("CARRY via") == 2, win.describe(res)
    assert [ip for ip, _ in far.seen()] == [lablib.PROXY_FAR_IP] * 3


@pytest.mark.parametrize("mode", ["sendto", "connect"])
def test_windows_udp_fails_closed_when_the_daemon_stops_mid_flow(
        lab: lablib.Lab, win: Win, tmp_path: Path, udp_hops: UdpHops, far: FarUdp,
        witness: Witness, mode: str) -> None:
    """The daemon stops after the program's first echo: its next send (a socket
    holding a grant, a connected one too) fails with WSAECONNREFUSED, and nothing more
    reaches the far server or leaves around the chain."""
    start_carrying(win, tmp_path, [udp_hops.url(0)])
    go, go_win = win.go_file()
    proc = win.spawn("udpecho", [lablib.FAR_IP, str(far.echo_port), "stop"],
                     opts=("-v",), env={"UDPMODE": mode, "UDPPAUSE": go_win})
    try:
        lablib.wait_until(lambda: len(far.seen()) >= 1, 60, "the first echo")
        res = win.sk.socksifyd("stop")
        assert res.returncode == 0, win.sk.describe(res)
        go.touch()
        res = proc.wait(120)
    finally:
        proc.kill()
    assert res.result_line()[:4] == ["RESULT", "fail", str(WSAECONNREFUSED), "send"], \
        res.describe()
    time.sleep(0.5)
    assert len(far.seen()) == 1
    assert witness.packets() == 0

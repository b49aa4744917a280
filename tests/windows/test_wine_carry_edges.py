"""The DLL's receive side of carried datagrams against a scripted daemon: a few lines
of Python in the client zone that answer every datagram CONNECT with CARRY and play the
carrier, sending what a real daemon rarely does (junk from the carrier port, an
envelope with another token, an ERROR envelope, a datagram from another sender). The
program is udpecho.exe with the DLL injected by clients/inject.c (the real launcher
needs the daemon's session). Checked: the carrier got each datagram once with the
envelope naming the program's destination and the grant's token; junk and strangers'
envelopes never reach the program; an ERROR fails a connected socket's receive with
WSAECONNRESET and is skipped on an unconnected one; another sender's datagram reaches
an unconnected socket intact, with its own source, and never a connected one."""

from __future__ import annotations

import secrets
import shutil
import socket
import struct
import tempfile
import threading
from pathlib import Path
from typing import Iterator

import pytest

import lab as lablib
from socksify.protocol import tcpauth

from . import winelab

pytestmark = pytest.mark.lab

WSAETIMEDOUT = 10060
WSAEOPNOTSUPP = 10045
MSG_PARTIAL = 0x8000
ERROR_NOT_SUPPORTED = 50
WSAECONNRESET = 10054
TOKEN = b"grant-01"
DEST_PORT = 5555


class ScriptedDaemon:
    """A TCP control listener answering CARRY (generation 0: nothing cached) and a
    carrier, in the client zone; `mode` says what the carrier sends before each echo."""

    def __init__(self, ns: str) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="skcarry-"))
        self.key = secrets.token_bytes(16)
        self.mode = "echo"
        self.got: list[bytes] = []
        self.requests: list[bytes] = []
        self._lock = threading.Lock()
        self.ctl = lablib.listener_in(ns, "127.0.0.1", 0)
        self.carrier = lablib.socket_in(ns, type=socket.SOCK_DGRAM)
        self.carrier.bind(("127.0.0.1", 0))
        self.stranger = lablib.socket_in(ns, type=socket.SOCK_DGRAM)
        self.stranger.bind(("127.0.0.1", 0))
        (self.dir / "control.tcp").write_text(
            f"tcp 127.0.0.1:{self.ctl.getsockname()[1]} {self.key.hex()}\n")
        for fn in (self._control, self._carry):
            threading.Thread(target=fn, daemon=True).start()

    def _control(self) -> None:
        while True:
            try:
                conn, _ = self.ctl.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(10)
                try:
                    nc = tcpauth.parse_hello(lablib.recv_exact(conn, 20))
                    nd = secrets.token_bytes(16)
                    conn.sendall(tcpauth.answer(self.key, nc, nd))
                    tcpauth.check_proof(self.key, nc, nd, lablib.recv_exact(conn, 32))
                    req = lablib.recv_exact(conn, 48)
                except (OSError, ValueError, AssertionError):
                    continue
                with self._lock:
                    self.requests.append(req)
                port = self.carrier.getsockname()[1]
                if req[7] == 2:     # datagram: CARRY, generation 0, the grant
                    reply = (b"SKFY\x01\x07\x00\x00" + struct.pack("!HH", port, 0)
                             + bytes(8) + TOKEN + bytes(4))
                else:               # anything else: FAIL, EACCES
                    reply = b"SKFY\x01\x02\x03\x00" + bytes(24)
                conn.sendall(reply)

    def _carry(self) -> None:
        while True:
            try:
                data, addr = self.carrier.recvfrom(65536)
            except OSError:
                return
            if addr is None:        # shut down
                return
            with self._lock:
                self.got.append(data)
            env, payload = data[:36], data[36:]
            if self.mode == "junk":
                self.carrier.sendto(b"SKDG but not an envelope", addr)
                other = bytearray(env)
                other[28:36] = b"stranger"          # a token the program was not given
                self.carrier.sendto(bytes(other) + b"not yours", addr)
            if self.mode == "error":
                err = bytearray(env)
                err[5], err[7] = 1, 6               # ERROR, CONNRESET
                self.carrier.sendto(bytes(err), addr)
            if self.mode == "stranger":
                self.stranger.sendto(payload, addr)
                continue
            self.carrier.sendto(env + payload, addr)  # DATA from the destination

    def received(self) -> list[bytes]:
        with self._lock:
            return list(self.got)

    def close(self) -> None:
        for s in (self.ctl, self.carrier, self.stranger):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def scripted(lab: lablib.Lab) -> Iterator[ScriptedDaemon]:
    d = ScriptedDaemon(lab.client_ns)
    try:
        yield d
    finally:
        d.close()


def run_echo(wine: winelab.Wine, build: Path, daemon: ScriptedDaemon, mode: str,
             peek: str = "0", log: str = "2",
             env: dict[str, str] | None = None) -> winelab.WineResult:
    exe = [wine.wine64, winelab.winpath(build / "inject.exe"),
           winelab.winpath(build / "socksify.dll"), winelab.winpath(build / "udpecho.exe"),
           lablib.FAR_IP, str(DEST_PORT), f"m{secrets.token_hex(4)}"]
    return wine.spawn(exe, {"SOCKSIFY_CONTROL_FILE": winelab.winpath(
        daemon.dir / "control.tcp"), "SOCKSIFY_LOG": log, "UDPMODE": mode,
        "UDPPEEK": peek, **(env or {})}).wait(120)


def assert_enveloped(daemon: ScriptedDaemon, count: int) -> None:
    """The carrier got `count` datagrams, each enveloped for the program's destination
    with the grant's token."""
    got = daemon.received()
    assert len(got) == count, got
    for data in got:
        assert data[:8] == b"SKDG\x01\x00\x04\x00", data[:12]
        assert struct.unpack("!H", data[8:10])[0] == DEST_PORT
        assert data[12:16] == socket.inet_aton(lablib.FAR_IP) and data[16:28] == bytes(12)
        assert data[28:36] == TOKEN


@pytest.mark.parametrize("mode", ["sendto", "WSASendMsg", "connect", "WSARecvEx",
                                  "ReadFile"])
def test_junk_from_the_carrier_never_reaches_the_program(
        wine: winelab.Wine, wine_build: Path, scripted: ScriptedDaemon,
        mode: str) -> None:
    """Before each echo the carrier sends a datagram that is not an envelope and an
    envelope with a token the program does not hold: the program still reads exactly
    its three echoes (with MSG_PEEK first, where the mode has a peek), from the
    destination. WSARecvEx (mswsock) and ReadFile (the socket as a file handle, sent
    to with WriteFile) are carried as recv and send."""
    scripted.mode = "junk"
    res = run_echo(wine, wine_build, scripted, mode,
                   peek="0" if mode in ("WSARecvEx", "ReadFile") else "1")
    line = res.result_line()
    assert res.returncode == 0 and line[:2] == ["RESULT", "ok"], res.describe()
    assert line[3] == f"{lablib.FAR_IP}:{DEST_PORT}", res.describe()
    assert_enveloped(scripted, 3)
    assert len(scripted.requests) == 1          # one grant, kept by the socket


def test_error_envelope_fails_a_connected_socket(wine: winelab.Wine, wine_build: Path,
                                                 scripted: ScriptedDaemon) -> None:
    """connect + recv: the ERROR envelope (CONNRESET) fails the receive with
    WSAECONNRESET, as an ICMP error would."""
    scripted.mode = "error"
    res = run_echo(wine, wine_build, scripted, "connect")
    assert res.result_line()[:4] == ["RESULT", "fail", str(WSAECONNRESET), "recv"], \
        res.describe()
    assert_enveloped(scripted, 1)


def test_error_envelope_is_skipped_on_an_unconnected_socket(
        wine: winelab.Wine, wine_build: Path, scripted: ScriptedDaemon) -> None:
    """sendto + recvfrom: the ERROR envelope is dropped and the echo behind it read."""
    scripted.mode = "error"
    res = run_echo(wine, wine_build, scripted, "sendto")
    assert res.result_line()[:2] == ["RESULT", "ok"], res.describe()
    assert_enveloped(scripted, 3)


def test_another_senders_datagram(wine: winelab.Wine, wine_build: Path,
                                  scripted: ScriptedDaemon) -> None:
    """A datagram from a stranger on loopback (not the carrier): an unconnected
    carried socket gets it intact with the stranger as its source (udpecho then
    fails on the source); a connected one never sees it (the receive times out)."""
    scripted.mode = "stranger"
    res = run_echo(wine, wine_build, scripted, "sendto")
    stranger = f"127.0.0.1:{scripted.stranger.getsockname()[1]}"
    assert f"echo from {stranger}" in res.stdout, res.describe()
    assert res.result_line()[:4] == ["RESULT", "fail", "0", "source"], res.describe()
    res = run_echo(wine, wine_build, scripted, "connect")
    assert res.result_line()[:4] == ["RESULT", "fail", str(WSAETIMEDOUT), "recv"], \
        res.describe()


def test_receive_begun_before_the_first_carried_send(wine: winelab.Wine,
                                                     wine_build: Path,
                                                     scripted: ScriptedDaemon) -> None:
    """A thread waits in recvfrom before the socket's first datagram is carried (the
    usual receiver-thread program): the echo's envelope is stripped there too, and
    the program reads the payload from the destination (the DLL's debug log says
    which path it took)."""
    res = run_echo(wine, wine_build, scripted, "thread", log="3")
    line = res.result_line()
    assert res.returncode == 0 and line[:2] == ["RESULT", "ok"], res.describe()
    assert line[3] == f"{lablib.FAR_IP}:{DEST_PORT}", res.describe()
    assert "got an envelope: stripped" in res.stderr, res.describe()
    assert_enveloped(scripted, 3)


def test_wsarecvex_reports_a_cut_datagram_as_partial(wine: winelab.Wine,
                                                    wine_build: Path,
                                                    scripted: ScriptedDaemon) -> None:
    """WSARecvEx into a 4-byte buffer on a carried socket: each echo comes stripped,
    cut to its first 4 bytes with MSG_PARTIAL set (udpecho checks both), not failed
    with WSAEMSGSIZE as recv would be; the carrier got the three datagrams."""
    res = run_echo(wine, wine_build, scripted, "WSARecvEx", env={"UDPRECVLEN": "4"})
    line = res.result_line()
    assert res.returncode == 0 and line[:3] == ["RESULT", "ok", "12"], res.describe()
    assert res.stdout.count(f"WSARecvEx 4 flags {MSG_PARTIAL}") == 3, res.describe()
    assert_enveloped(scripted, 3)


@pytest.mark.parametrize("mode", ["TransmitPackets", "TransmitFile"])
def test_transmit_on_a_carried_socket_is_refused(wine: winelab.Wine, wine_build: Path,
                                                 scripted: ScriptedDaemon,
                                                 mode: str) -> None:
    """TransmitPackets/TransmitFile (the pointers WSAIoctl hands out) on a socket
    connected for a carried peer would send the datagram to the carrier without an
    envelope: refused with WSAEOPNOTSUPP, and the carrier got nothing."""
    res = run_echo(wine, wine_build, scripted, mode)
    if mode == "TransmitPackets" and res.result_line()[3:4] == ["WSAIoctl"]:
        pytest.skip("Wine 8's WSAIoctl hands out no TransmitPackets")
    assert res.result_line()[:4] == ["RESULT", "fail", str(WSAEOPNOTSUPP), "send"], \
        res.describe()
    assert len(scripted.requests) == 1          # the connect was carried
    assert scripted.received() == []


@pytest.mark.parametrize("mode,where", [("ReadFileEx", "recv"), ("WriteFileEx", "send")])
def test_file_ex_calls_on_a_carried_socket_are_refused(wine: winelab.Wine,
                                                       wine_build: Path,
                                                       scripted: ScriptedDaemon,
                                                       mode: str, where: str) -> None:
    """ReadFileEx/WriteFileEx (always overlapped: a completion routine) on a socket
    connected for a carried peer: refused with ERROR_NOT_SUPPORTED at the call, not
    completed with the envelope as data nor sent to the carrier without one (the
    carrier got only the datagram send() carried before ReadFileEx)."""
    res = run_echo(wine, wine_build, scripted, mode)
    assert res.result_line()[:4] == ["RESULT", "fail", str(ERROR_NOT_SUPPORTED), where], \
        res.describe()
    assert_enveloped(scripted, 1 if mode == "ReadFileEx" else 0)

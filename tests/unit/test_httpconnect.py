"""HTTP CONNECT hop: request bytes, the strict bounded reply-head parser, and the
exact reader (nothing after the blank line is consumed), against hostile replies."""

from __future__ import annotations

import asyncio
import errno
import socket

import pytest

from socksify.chains import httphop
from socksify.errors import HopProtocolError, HopRefused, HopTimeout
from socksify.protocol import httpconnect as hc
from socksify.sockstream import RawStream


def test_request_bytes() -> None:
    assert hc.ConnectRequest("far.example", 443).dumps() == (
        b"CONNECT far.example:443 HTTP/1.1\r\nHost: far.example:443\r\n\r\n")
    assert hc.ConnectRequest("2001:db8::1", 80).dumps().startswith(
        b"CONNECT [2001:db8::1]:80 HTTP/1.1\r\n")
    req = hc.ConnectRequest("10.0.0.1", 22, "alice", "s:ecret").dumps()
    assert b"Proxy-Authorization: Basic YWxpY2U6czplY3JldA==\r\n" in req
    assert req.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("host", ["a b", "a\r\nX-Evil: 1", "a:80", "", "x" * 300])
def test_request_refuses_hosts_that_would_inject(host: str) -> None:
    with pytest.raises(ValueError):
        hc.ConnectRequest(host, 80).dumps()


def test_parse_reply() -> None:
    r = hc.Reply.loads(b"HTTP/1.1 200 Connection established\r\nVia: x\r\n\r\n")
    assert r.granted and r.status_line == "200 Connection established"
    assert r.get("via") == "x"
    r = hc.Reply.loads(b"HTTP/1.0 407 Proxy Authentication Required\r\n"
                       b"Proxy-Authenticate: Basic realm=\"t\"\r\n\r\n")
    assert not r.granted and r.status == 407
    assert hc.Reply.loads(b"HTTP/1.1 200\r\n\r\n").granted   # empty reason


@pytest.mark.parametrize("head", [
    b"SSH-2.0-OpenSSH\r\n\r\n",
    b"HTTP/2 200 OK\r\n\r\n",
    b"HTTP/1.1 99 x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nbad name: v\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * (hc.MAX_FIELDS + 1) + b"\r\n",
])
def test_parse_refuses_malformed(head: bytes) -> None:
    with pytest.raises(hc.ProtocolError):
        hc.Reply.loads(head)


def _exchange(reply: bytes, close: bool = True, timeout: float = 2.0
              ) -> tuple[hc.Reply | Exception, bytes]:
    """Send `reply` on one end of a socketpair; read_reply on the other. Returns the
    reply (or the error) and what is left in the socket afterwards."""
    a, b = socket.socketpair()

    async def go() -> hc.Reply | Exception:
        stream = RawStream(a, owned=False)
        try:
            return await httphop.read_reply(stream, timeout, "hop 1", "CONNECT t", 1, 0)
        except Exception as exc:   # noqa: BLE001 - the test inspects it
            return exc

    try:
        b.sendall(reply)
        if close:
            b.shutdown(socket.SHUT_WR)
        got = asyncio.run(go())
        a.setblocking(False)
        rest = b""
        try:
            while chunk := a.recv(65536):
                rest += chunk
        except BlockingIOError:
            pass
        return got, rest
    finally:
        a.close()
        b.close()


def test_bytes_after_the_blank_line_stay_in_the_socket() -> None:
    got, rest = _exchange(b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nSSH-2.0-far\r\n\r\nmore",
                          close=False)
    assert isinstance(got, hc.Reply) and got.granted
    assert rest == b"SSH-2.0-far\r\n\r\nmore"


def test_interim_replies_are_skipped() -> None:
    got, rest = _exchange(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n\r\nX",
                          close=False)
    assert isinstance(got, hc.Reply) and got.status == 200 and rest == b"X"


def test_huge_head_is_a_protocol_error() -> None:
    got, _ = _exchange(b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * (hc.MAX_HEAD * 2))
    assert isinstance(got, HopProtocolError) and got.hop == 0, got


def test_no_blank_line_then_close_is_a_refusal() -> None:
    got, _ = _exchange(b"HTTP/1.1 200 OK\r\nX: y\r\n")
    assert isinstance(got, HopRefused) and "closed after" in str(got), got
    assert got.hop == 1


def test_early_close_and_silence() -> None:
    got, _ = _exchange(b"")
    assert isinstance(got, HopRefused) and got.hop == 1
    got, _ = _exchange(b"HTTP/1.1 2", close=False, timeout=0.3)
    assert isinstance(got, HopTimeout) and got.errno == errno.ETIMEDOUT


def test_garbage_is_a_protocol_error() -> None:
    got, _ = _exchange(b"\x05\x00\r\n\r\n")
    assert isinstance(got, HopProtocolError)


@pytest.mark.parametrize("status,err,blame", [
    (407, errno.EACCES, 0), (401, errno.EACCES, 0), (403, errno.EACCES, 1), (502, errno.ECONNREFUSED, 1),
    (503, errno.ECONNREFUSED, 1), (504, errno.ETIMEDOUT, 1),
    (500, errno.ECONNREFUSED, 1), (404, errno.ECONNREFUSED, 1)])
def test_refusal_errno(status: int, err: int, blame: int) -> None:
    exc = httphop.refusal(hc.Reply(status, "Why Not"), "hop 1 http://p:1", "CONNECT t",
                          1, 0, "alice")
    assert exc.errno == err and exc.hop == blame
    assert f"HTTP {status} Why Not" in str(exc)
    if status in (401, 407):
        assert "proxy authentication required" in str(exc)

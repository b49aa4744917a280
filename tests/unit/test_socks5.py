"""SOCKS5 (RFC 1928) and username/password auth (RFC 1929) bytes, written out by hand
from the RFCs' layouts."""

import pytest

from socksify.protocol import socks5


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def test_greeting() -> None:
    assert socks5.Greeting().dumps() == h("05 01 00")
    assert socks5.Greeting((0, 2)).dumps() == h("05 02 00 02")


def test_method_choice() -> None:
    assert socks5.MethodChoice.loads(h("05 02")).method == 2
    assert socks5.MethodChoice.loads(h("05 ff")).method == socks5.METHOD_NONE_ACCEPTABLE
    for bad in ("04 00", "05", "05 00 00"):
        with pytest.raises(socks5.ProtocolError):
            socks5.MethodChoice.loads(h(bad))


def test_userpass() -> None:
    assert socks5.UserPassAuth("bob", "s3").dumps() == h("01 03 626f62 02 7333")
    assert socks5.AuthReply.loads(h("01 00")).ok
    assert not socks5.AuthReply.loads(h("01 01")).ok
    with pytest.raises(socks5.ProtocolError):
        socks5.AuthReply.loads(h("05 00"))
    with pytest.raises(ValueError):
        socks5.UserPassAuth("", "x").dumps()


@pytest.mark.parametrize("host,port,expected", [
    ("192.0.2.7", 80, "05 01 00 01 c0000207 0050"),
    ("2001:db8::1", 443, "05 01 00 04 20010db8000000000000000000000001 01bb"),
    ("example.org", 8080, "05 01 00 03 0b 6578616d706c652e6f7267 1f90"),
])
def test_connect_request(host: str, port: int, expected: str) -> None:
    assert socks5.ConnectRequest(host, port).dumps() == h(expected)


@pytest.mark.parametrize("raw,code,host,port", [
    ("05 00 00 01 0a000001 1f90", 0, "10.0.0.1", 8080),
    ("05 05 00 01 00000000 0000", 5, "0.0.0.0", 0),
    ("05 00 00 04 20010db8000000000000000000000001 0050", 0, "2001:db8::1", 80),
    ("05 00 00 03 03 616263 0016", 0, "abc", 22),
])
def test_reply_in_two_reads(raw: str, code: int, host: str, port: int) -> None:
    data = h(raw)
    head = data[:socks5.Reply.head_size]
    assert socks5.Reply.head_size + socks5.Reply.rest_size(head) == len(data)
    reply = socks5.Reply.loads(data)
    assert (reply.code, reply.host, reply.port) == (code, host, port)
    assert reply.granted is (code == 0)
    assert reply.dumps() == data


@pytest.mark.parametrize("raw", [
    "04 00 00 01 0a000001 1f90",     # not version 5
    "05 00 00 02 0a000001 1f90",     # unknown address type
    "05 00 01 01 0a000001 1f90",     # reserved byte set
    "05 00 00 01 0a000001 1f",       # short
])
def test_bad_replies(raw: str) -> None:
    with pytest.raises(socks5.ProtocolError):
        socks5.Reply.loads(h(raw))


def test_reply_codes_describe() -> None:
    assert "connection refused" in socks5.Reply(5, "0.0.0.0", 0).describe()
    assert "unknown" in socks5.Reply(42, "0.0.0.0", 0).describe()

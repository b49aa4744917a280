"""SOCKS4/4a CONNECT bytes, checked against layouts written out by hand from the
protocol description (VN CD DSTPORT DSTIP USERID NUL [HOST NUL])."""

import ipaddress

import pytest

from socksify.protocol import socks4

REQUESTS = [
    # host, port, userid, expected bytes
    ("10.0.0.5", 1080, "", "04 01 0438 0a000005 00"),
    ("192.0.2.1", 80, "alice", "04 01 0050 c0000201 616c696365 00"),
    ("198.51.100.7", 65535, "", "04 01 ffff c6336407 00"),
    ("example.org", 443, "", "04 01 01bb 00000001 00 6578616d706c652e6f7267 00"),
    ("a.b", 8080, "u", "04 01 1f90 00000001 75 00 612e62 00"),
]


@pytest.mark.parametrize("host,port,user,expected", REQUESTS)
def test_request_bytes(host: str, port: int, user: str, expected: str) -> None:
    assert socks4.ConnectRequest(host, port, user).dumps() == \
        bytes.fromhex(expected.replace(" ", ""))


@pytest.mark.parametrize("host,port,user", [
    ("2001:db8::1", 80, ""),          # SOCKS4 has no IPv6
    ("10.0.0.1", 70000, ""),          # port out of range
    ("10.0.0.1", 80, "a\0b"),         # NUL inside the user id
    ("x" * 256, 80, ""),              # host name too long for one field
])
def test_request_rejects(host: str, port: int, user: str) -> None:
    with pytest.raises(ValueError):
        socks4.ConnectRequest(host, port, user).dumps()


@pytest.mark.parametrize("raw,code,granted", [
    ("00 5a 0000 00000000", 90, True),
    ("04 5a 1f90 0a000001", 90, True),   # VN 4, as some servers send it
    ("00 5b 0000 00000000", 91, False),
    ("00 5c 0000 00000000", 92, False),
    ("00 5d 0000 00000000", 93, False),
])
def test_reply_parses(raw: str, code: int, granted: bool) -> None:
    reply = socks4.Reply.loads(bytes.fromhex(raw.replace(" ", "")))
    assert reply.code == code
    assert reply.granted is granted
    assert str(code) in reply.describe()


def test_reply_fields_roundtrip() -> None:
    reply = socks4.Reply(90, 8080, ipaddress.IPv4Address("10.1.2.3"))
    assert socks4.Reply.loads(reply.dumps()) == reply
    assert reply.dumps() == bytes.fromhex("005a1f900a010203")


@pytest.mark.parametrize("raw", [
    "05 00 0000 00000000",      # a SOCKS5 server answering
    "00 00 0000 00000000",      # code outside 90..93
    "00 5a 0000 000000",        # short
    "00 5a 0000 0000000000",    # long
    "48 54 5450 2f312e31",      # "HTTP/1.1": an HTTP proxy
])
def test_reply_rejects_garbage(raw: str) -> None:
    with pytest.raises(socks4.ProtocolError):
        socks4.Reply.loads(bytes.fromhex(raw.replace(" ", "")))


def test_socks4a_marker_addresses_cannot_be_sent() -> None:
    """0.0.0.1-0.0.0.255 would tell a SOCKS4a server that a host name follows."""
    with pytest.raises(ValueError, match="SOCKS4a"):
        socks4.ConnectRequest("0.0.0.7", 80).dumps()
    assert socks4.ConnectRequest("0.0.0.0", 80).dumps()[4:8] == bytes(4)


def test_the_success_path_agrees_with_the_full_parser() -> None:
    """is_grant (the chain engine's check of a reply) says yes exactly where
    Reply.loads() parses a grant; connect_request (cached) is dumps(), errors too."""
    for vn in range(256):
        for code in (0, 89, 90, 91, 93, 94, 255):
            for data in (bytes([vn, code, 0, 80, 10, 0, 0, 1]), bytes([vn, code, 0])):
                try:
                    full = socks4.Reply.loads(data).granted
                except socks4.ProtocolError:
                    full = False
                assert socks4.is_grant(data) == full, data
    assert socks4.connect_request("10.0.0.2", 1082, "u") == \
        socks4.ConnectRequest("10.0.0.2", 1082, "u").dumps()
    assert socks4.connect_request("example.org", 80) == \
        socks4.ConnectRequest("example.org", 80).dumps()
    for bad in (("::1", 80), ("10.0.0.2", 70000), ("0.0.0.7", 80)):
        with pytest.raises(ValueError):
            socks4.connect_request(*bad)

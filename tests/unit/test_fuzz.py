"""Property tests of the sans-I/O parsers (hypothesis): on arbitrary bytes each parser
returns or raises its own module's error (SOCKS ProtocolError, control WireError, both
ValueError subclasses) -- never IndexError, struct.error, UnicodeDecodeError, ...; the
server-side parsers are incremental (a prefix of a request asks for more, bytes after it
are left alone); and valid values survive dumps -> loads."""

from __future__ import annotations

import ipaddress
from typing import Any, Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from socksify.protocol import control as wire
from socksify.protocol import socks4, socks5

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

ports = st.integers(0, 0xFFFF)
ipv4 = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ipv6 = st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
ip_objs = st.one_of(st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address),
                    st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address))
# host names as the protocols carry them: printable ASCII without spaces, 1..255 bytes
names = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1,
                max_size=255)
# a field that is text without NUL, at most 255 bytes once encoded
fields = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
                 max_size=60).filter(lambda s: len(s.encode()) <= 255)


def survives(error: type[BaseException], fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) returns, or raises error; anything else fails the test."""
    try:
        return fn(*args)
    except error:
        return None


# --- SOCKS4 ---------------------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=16))
def test_socks4_reply_loads_any_bytes(data: bytes) -> None:
    reply = survives(socks4.ProtocolError, socks4.Reply.loads, data)
    if reply is not None:
        assert len(data) == socks4.REPLY_SIZE and data[0] in (0, 4)
        assert 90 <= reply.code <= 93 and reply.granted == (reply.code == 90)
        assert str(reply.code) in reply.describe()


@FUZZ
@given(st.integers(90, 93), ports, ipv4)
def test_socks4_reply_roundtrip(code: int, port: int, addr: str) -> None:
    reply = socks4.Reply(code, port, ipaddress.IPv4Address(addr))
    assert socks4.Reply.loads(reply.dumps()) == reply


@FUZZ
@given(st.one_of(st.binary(max_size=600),
                 st.tuples(st.sampled_from([1, 2, 3]), st.binary(max_size=300)).map(
                     lambda t: bytes([4, t[0]]) + t[1])))
def test_socks4_parse_request_any_bytes(data: bytes) -> None:
    got = survives(socks4.ProtocolError, socks4.parse_request, data)
    if got is not None:
        used, req = got
        assert 9 <= used <= len(data)
        assert isinstance(req, (socks4.ConnectRequest, socks4.BindRequest))
        assert 0 <= req.port <= 0xFFFF


def _socks4_requests() -> st.SearchStrategy[socks4.ConnectRequest]:
    # 0.0.0.x (x != 0) is SOCKS4a's "a name follows" marker, never an address
    def not_marker(host: str) -> bool:
        return not (host.startswith("0.0.0.") and host != "0.0.0.0")
    # a name with ':' is taken for an IPv6 address (refused by SOCKS4)
    hosts = st.one_of(ipv4, names.filter(lambda n: ":" not in n)).filter(not_marker)
    return st.builds(socks4.ConnectRequest, hosts, ports, fields)


@FUZZ
@given(_socks4_requests(), st.binary(max_size=20))
def test_socks4_request_roundtrip_and_incremental(req: socks4.ConnectRequest,
                                                  tail: bytes) -> None:
    raw = req.dumps()
    assert socks4.parse_request(raw) == (len(raw), req)
    # bytes after the request are the client's data: not consumed
    assert socks4.parse_request(raw + tail) == (len(raw), req)
    for cut in range(len(raw)):
        assert socks4.parse_request(raw[:cut]) is None, cut


# --- SOCKS5 ---------------------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=300))
def test_socks5_reply_loads_any_bytes(data: bytes) -> None:
    reply = survives(socks5.ProtocolError, socks5.Reply.loads, data)
    if reply is not None:
        assert data[0] == socks5.VERSION and data[2] == 0
        assert 0 <= reply.port <= 0xFFFF and reply.code == data[1]
        reply.describe()


@FUZZ
@given(st.binary(min_size=0, max_size=8))
def test_socks5_rest_size_any_bytes(head: bytes) -> None:
    n = survives(socks5.ProtocolError, socks5.Reply.rest_size, head)
    if n is not None:
        assert len(head) == socks5.Reply.head_size and 2 <= n <= 255 + 2


@FUZZ
@given(st.binary(max_size=300))
def test_socks5_reply_read_as_the_chain_reads_it(stream: bytes) -> None:
    """head_size bytes, then rest_size(head) more, then loads(): from any stream
    either a reply whose dumps() gives back exactly the bytes read, or ProtocolError."""
    def read() -> tuple[socks5.Reply, bytes]:
        head = stream[:socks5.Reply.head_size]
        raw = head + stream[len(head):len(head) + socks5.Reply.rest_size(head)]
        return socks5.Reply.loads(raw), raw
    got = survives(socks5.ProtocolError, read)
    if got is not None:
        reply, raw = got
        if raw[3] != socks5.AddrType.DOMAIN or raw[4] and all(33 <= b < 127
                                                              for b in raw[5:-2]):
            assert reply.dumps() == raw


@FUZZ
@given(st.integers(0, 255), st.one_of(ipv4, ipv6, names), ports)
def test_socks5_reply_roundtrip(code: int, host: str, port: int) -> None:
    reply = socks5.Reply(code, host, port)
    raw = reply.dumps()
    head = raw[:socks5.Reply.head_size]
    assert len(raw) == len(head) + socks5.Reply.rest_size(head)
    assert socks5.Reply.loads(raw) == reply


@FUZZ
@given(st.binary(max_size=8))
def test_socks5_small_replies_any_bytes(data: bytes) -> None:
    for parse in (socks5.MethodChoice.loads, socks5.AuthReply.loads):
        got = survives(socks5.ProtocolError, parse, data)
        assert got is None or len(data) == 2


def _socks5ish() -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, and bytes that start like a request (VER CMD RSV ATYP) or an
    RFC 1929 message, so the parsers' deeper branches are reached too."""
    return st.one_of(
        st.binary(max_size=300),
        st.tuples(st.integers(0, 3), st.sampled_from([1, 3, 4, 0, 2]),
                  st.binary(max_size=40)).map(
            lambda t: bytes([5, t[0], 0, t[1]]) + t[2]),
        st.binary(max_size=40).map(lambda b: b"\x01" + b))


@FUZZ
@given(_socks5ish())
def test_socks5_server_parsers_any_bytes(data: bytes) -> None:
    for parse in (socks5.parse_greeting, socks5.parse_userpass, socks5.parse_request):
        got = survives(socks5.ProtocolError, parse, data)
        if got is not None:
            assert got[0] >= 1 and got[0] <= len(data), (parse.__name__, got)


@FUZZ
@given(st.lists(st.integers(0, 255), min_size=1, max_size=255), st.binary(max_size=10))
def test_socks5_greeting_roundtrip(methods: list[int], tail: bytes) -> None:
    raw = socks5.Greeting(tuple(methods)).dumps()
    assert socks5.parse_greeting(raw + tail) == (len(raw), tuple(methods))
    for cut in range(len(raw)):
        assert socks5.parse_greeting(raw[:cut]) is None


@FUZZ
@given(fields.filter(bool), fields.filter(bool), st.binary(max_size=10))
def test_socks5_userpass_roundtrip(user: str, password: str, tail: bytes) -> None:
    auth = socks5.UserPassAuth(user, password)
    raw = auth.dumps()
    assert socks5.parse_userpass(raw + tail) == (len(raw), auth)
    for cut in range(len(raw)):
        assert socks5.parse_userpass(raw[:cut]) is None


@FUZZ
@given(st.one_of(ipv4, ipv6, names), ports, st.binary(max_size=10))
def test_socks5_request_roundtrip(host: str, port: int, tail: bytes) -> None:
    raw = socks5.ConnectRequest(host, port).dumps()
    assert socks5.parse_request(raw + tail) == (len(raw), socks5.CMD_CONNECT, host, port)
    for cut in range(len(raw)):
        assert socks5.parse_request(raw[:cut]) is None


# --- the control wire -------------------------------------------------------------------

def _requestish() -> st.SearchStrategy[bytes]:
    """48-byte requests that get past the magic and version now and then."""
    return st.one_of(
        st.binary(min_size=0, max_size=60),
        st.binary(min_size=wire.REQUEST_SIZE - 6, max_size=wire.REQUEST_SIZE - 6).map(
            lambda b: wire.MAGIC + bytes([wire.VERSION]) + b[:1] + bytes([b[1] % 8])
            + b[2:]),
        st.tuples(st.integers(0, 5), st.integers(0, 7), st.integers(0, 3),
                  st.integers(0, 300), st.binary(min_size=40, max_size=40)).map(
            lambda t: wire.MAGIC + bytes([wire.VERSION, t[0], t[1], t[2]])
            + (t[3] >> 8 & 0xFF).to_bytes(1, "big") + (t[3] & 0xFF).to_bytes(1, "big")
            + t[4][:2] + t[4][2:]))


@FUZZ
@given(_requestish(), st.binary(max_size=300))
def test_control_request_parsers_any_bytes(data: bytes, body: bytes) -> None:
    head = survives(wire.WireError, wire.Header.loads, data)
    survives(wire.WireError, wire.ConnectRequest.loads, data)
    if head is None:
        return
    assert len(data) == wire.REQUEST_SIZE
    if head.op is wire.Op.RESOLVE:
        assert head.body_len >= 1 and head.body_len <= wire.MAX_NAME
        for b in (body, body[:head.body_len]):
            req = survives(wire.WireError, wire.ResolveRequest.from_header, head, b)
            assert req is None or (len(b) == head.body_len and req.family in (0, 4, 6))
    else:
        assert head.body_len == 0
        req = survives(wire.WireError, wire.ConnectRequest.from_header, head)
        assert req is None or req.op is head.op


@FUZZ
@given(st.binary(max_size=300))
def test_control_reply_parsers_any_bytes(data: bytes) -> None:
    for parse in (wire.Reply.loads, wire.PeerReply.loads, wire.NameReply.loads,
                  wire.NameReply.body_len):
        survives(wire.WireError, parse, data)


@FUZZ
@given(st.binary(min_size=wire.REPLY_SIZE - 5, max_size=wire.REPLY_SIZE - 5),
       st.integers(0, 5), st.binary(max_size=260))
def test_control_replies_with_good_magic(rest: bytes, verdict: int, body: bytes) -> None:
    data = wire.MAGIC + bytes([wire.VERSION, verdict]) + rest[1:]
    for raw in (data, data + body):
        for parse in (wire.Reply.loads, wire.PeerReply.loads, wire.NameReply.loads):
            survives(wire.WireError, parse, raw)


@FUZZ
@given(ip_objs, ports, st.sampled_from(list(wire.SockType)), st.binary(min_size=8,
       max_size=8), st.sampled_from([wire.Op.CONNECT, wire.Op.PEERNAME, wire.Op.NAMEOF]))
def test_control_connect_roundtrip(addr: Any, port: int, socktype: wire.SockType,
                                   session: bytes, op: wire.Op) -> None:
    req = wire.ConnectRequest(addr, port, socktype, session, op)
    raw = req.dumps()
    assert len(raw) == wire.REQUEST_SIZE
    assert wire.ConnectRequest.loads(raw) == req


@FUZZ
@given(names, st.sampled_from([0, 4, 6]), st.binary(min_size=8, max_size=8))
def test_control_resolve_roundtrip(name: str, family: int, session: bytes) -> None:
    req = wire.ResolveRequest(name, family, session)
    raw = req.dumps()
    head = wire.Header.loads(raw[:wire.REQUEST_SIZE])
    assert wire.ResolveRequest.from_header(head, raw[wire.REQUEST_SIZE:]) == req


@FUZZ
@given(st.sampled_from([wire.Verdict.RELAY, wire.Verdict.DIRECT, wire.Verdict.FAIL]),
       st.sampled_from(list(wire.Code)), ports, ports, st.binary(min_size=16, max_size=16))
def test_control_reply_roundtrip(verdict: wire.Verdict, code: wire.Code, p4: int, p6: int,
                                 token: bytes) -> None:
    reply = wire.Reply(verdict, code, p4, p6, token)
    assert wire.Reply.loads(reply.dumps()) == reply


@FUZZ
@given(ip_objs, ports)
def test_control_peer_reply_roundtrip(addr: Any, port: int) -> None:
    reply = wire.PeerReply(addr, port)
    assert wire.PeerReply.loads(reply.dumps()) == reply


@FUZZ
@given(names)
def test_control_name_reply_roundtrip(name: str) -> None:
    raw = wire.NameReply(name).dumps()
    assert wire.NameReply.body_len(raw[:wire.REPLY_SIZE]) == len(raw) - wire.REPLY_SIZE
    assert wire.NameReply.loads(raw) == wire.NameReply(name)


@FUZZ
@given(st.one_of(names, st.text(max_size=300)))
def test_control_name_reply_dumps_rejects_cleanly(name: str) -> None:
    """Any text: dumps() refuses with WireError, or the name comes back whole."""
    raw = survives(wire.WireError, wire.NameReply(name).dumps)
    if raw is not None:
        assert wire.NameReply.loads(raw).name == name

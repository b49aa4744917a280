"""The Python side of the control wire format against the shared vectors
(tests/vectors/control.txt), which the C tests read too."""

import errno
import ipaddress

import pytest

from socksify.protocol import control as wire
import wirevectors


def _load(kind: str) -> list[dict[str, str]]:
    return wirevectors.load("control.txt", kind)


def test_vectors_present() -> None:
    assert len(_load("request")) >= 4
    assert len(_load("reply")) >= 10
    assert len(_load("bad-reply")) >= 3
    assert len(_load("peer-reply")) >= 2
    assert len(_load("name-reply")) >= 2
    assert len(_load("bad-name-reply")) >= 5
    assert any(v["op"] == str(int(wire.Op.NAMEOF)) for v in _load("request"))
    assert any(v["op"] == str(int(wire.Op.UNWRAP)) for v in _load("request"))


def test_unwrap_is_about_a_datagram_socket() -> None:
    raw = wire.ConnectRequest(ipaddress.ip_address("192.0.2.7"), 5, wire.SockType.STREAM,
                              op=wire.Op.CONNECT).dumps()
    bad = raw[:5] + bytes([int(wire.Op.UNWRAP)]) + raw[6:]
    with pytest.raises(wire.WireError):
        wire.Header.loads(bad)


@pytest.mark.parametrize("v", _load("request"), ids=lambda v: v["name"])
def test_request_vector(v: dict[str, str]) -> None:
    raw = bytes.fromhex(v["hex"])
    req = wire.ConnectRequest(ipaddress.ip_address(v["addr"]), int(v["port"]),
                              wire.SockType(int(v["socktype"])),
                              bytes.fromhex(v["session"]), wire.Op(int(v["op"])))
    assert req.dumps() == raw
    assert wire.ConnectRequest.loads(raw) == req
    assert raw[6] == int(v["family"])


@pytest.mark.parametrize("v", _load("reply"), ids=lambda v: v["name"])
def test_reply_vector(v: dict[str, str]) -> None:
    rep = wire.Reply.loads(bytes.fromhex(v["hex"]))
    assert rep.verdict == int(v["verdict"])
    assert rep.relay_port4 == int(v["port4"])
    assert rep.relay_port6 == int(v["port6"])
    assert rep.token == bytes.fromhex(v["token"])
    assert rep.flags == int(v["flags"])
    assert rep.dumps() == bytes.fromhex(v["hex"]) or v["name"] == "fail-unknown-code"
    expected = 0 if v["errno"] == "0" else getattr(errno, v["errno"])
    assert rep.code.to_errno() == expected


@pytest.mark.parametrize("v", _load("resolve"), ids=lambda v: v["name"])
def test_resolve_vector(v: dict[str, str]) -> None:
    raw = bytes.fromhex(v["hex"])
    req = wire.ResolveRequest(v["host"], int(v["family"]), bytes.fromhex(v["session"]))
    assert req.dumps() == raw
    head = wire.Header.loads(raw[:wire.REQUEST_SIZE])
    assert head.op is wire.Op.RESOLVE and head.body_len == len(raw) - wire.REQUEST_SIZE
    assert wire.ResolveRequest.from_header(head, raw[wire.REQUEST_SIZE:]) == req


def test_resolve_rejects_bad_bodies() -> None:
    good = wire.ResolveRequest("example.org").dumps()
    head = wire.Header.loads(good[:wire.REQUEST_SIZE])
    for body in (b"exa mple.org", b"ex\x00ample.org", b"caf\xc3\xa9.org"):
        with pytest.raises(wire.WireError):
            wire.ResolveRequest.from_header(
                wire.Header.loads(good[:10] + len(body).to_bytes(2, "big")
                                  + good[12:wire.REQUEST_SIZE]), body)
    for bad_len in (0, 256):
        with pytest.raises(wire.WireError):
            wire.Header.loads(good[:10] + bad_len.to_bytes(2, "big")
                              + good[12:wire.REQUEST_SIZE])
    assert head.body_len == len("example.org")


@pytest.mark.parametrize("v", _load("peer-reply"), ids=lambda v: v["name"])
def test_peer_reply_vector(v: dict[str, str]) -> None:
    raw = bytes.fromhex(v["hex"])
    rep = wire.PeerReply.loads(raw)
    assert rep == wire.PeerReply(ipaddress.ip_address(v["addr"]), int(v["port"]))
    assert rep.dumps() == raw
    assert raw[6] == int(v["family"])
    with pytest.raises(wire.WireError):   # a CONNECT reader never takes it for RELAY
        wire.Reply.loads(raw)


@pytest.mark.parametrize("v", _load("bad-reply"), ids=lambda v: v["name"])
def test_bad_reply_vector(v: dict[str, str]) -> None:
    with pytest.raises(wire.WireError):
        wire.Reply.loads(bytes.fromhex(v["hex"]))


@pytest.mark.parametrize("v", _load("name-reply"), ids=lambda v: v["name"])
def test_name_reply_vector(v: dict[str, str]) -> None:
    raw = bytes.fromhex(v["hex"])
    rep = wire.NameReply.loads(raw)
    assert rep == wire.NameReply(v["host"])
    assert rep.dumps() == raw
    assert wire.NameReply.body_len(raw[:wire.REPLY_SIZE]) == len(v["host"])
    assert raw[5] == wire.Verdict.NAME
    with pytest.raises(wire.WireError):   # never taken for another reply
        wire.Reply.loads(raw[:wire.REPLY_SIZE])
    with pytest.raises(wire.WireError):
        wire.PeerReply.loads(raw[:wire.REPLY_SIZE])


@pytest.mark.parametrize("v", _load("bad-name-reply"), ids=lambda v: v["name"])
def test_bad_name_reply_vector(v: dict[str, str]) -> None:
    with pytest.raises(wire.WireError):
        wire.NameReply.loads(bytes.fromhex(v["hex"]))


@pytest.mark.parametrize("name", ["", "a" * 256, "a b", "caf\u00e9.test", "a\0b"])
def test_name_reply_refuses_bad_names(name: str) -> None:
    with pytest.raises(wire.WireError):
        wire.NameReply(name).dumps()


def test_nameof_request_has_no_body() -> None:
    req = wire.ConnectRequest(ipaddress.ip_address("240.0.0.9"), 0, op=wire.Op.NAMEOF)
    raw = req.dumps()
    assert raw[5] == 4 and wire.ConnectRequest.loads(raw) == req
    with pytest.raises(wire.WireError):
        wire.Header.loads(raw[:10] + b"\x00\x01" + raw[12:])


def test_request_rejects_bad_headers() -> None:
    good = wire.ConnectRequest(ipaddress.ip_address("192.0.2.1"), 80).dumps()
    for bad in (b"XXXX" + good[4:], good[:4] + b"\x09" + good[5:],
                good[:5] + b"\x07" + good[6:], good[:6] + b"\x05" + good[7:],
                good[:10] + b"\x00\x01" + good[12:], good[:47]):
        with pytest.raises(wire.WireError):
            wire.ConnectRequest.loads(bad)


def test_errno_mapping_roundtrips() -> None:
    for code in wire.Code:
        if code is not wire.Code.NONE:
            assert wire.Code.from_errno(code.to_errno()) is code
    # an errno without a code of its own is still a refusal, never success
    assert wire.Code.from_errno(errno.EPIPE) is wire.Code.CONNREFUSED

"""The Python side of the datagram handoff (the WRAP request and reply, the reply
prefix match) against the shared vectors (tests/vectors/wrap.txt), which the C tests
read too."""

import ipaddress

import pytest

from socksify.protocol import control
from socksify.protocol.datagram import WrapReply
import wirevectors


def _load(kind: str) -> list[dict[str, str]]:
    return wirevectors.load("wrap.txt", kind)


def test_vectors_present() -> None:
    assert len(_load("wrap-request")) >= 2
    assert {v["family"] for v in _load("wrap")} == {"4", "6"}
    assert len(_load("bad-wrap")) >= 8
    results = {v["payload"] == "drop" for v in _load("match")}
    assert results == {True, False}


@pytest.mark.parametrize("v", _load("wrap-request"), ids=lambda v: v["name"])
def test_wrap_request_vector(v: dict[str, str]) -> None:
    raw = bytes.fromhex(v["hex"])
    req = control.ConnectRequest.loads(raw)
    assert req.op is control.Op.WRAP and req.socktype is control.SockType.DGRAM
    assert req.addr == ipaddress.ip_address(v["addr"]) and req.port == int(v["port"])
    assert req.session == bytes.fromhex(v["session"])
    assert req.dumps() == raw


def test_wrap_request_is_for_datagrams_only() -> None:
    req = control.ConnectRequest(ipaddress.ip_address("192.0.2.1"), 53,
                                 control.SockType.STREAM, op=control.Op.WRAP)
    with pytest.raises(control.WireError):
        control.ConnectRequest.loads(req.dumps())


@pytest.mark.parametrize("v", _load("wrap"), ids=lambda v: v["name"])
def test_wrap_vector(v: dict[str, str]) -> None:
    raw = bytes.fromhex(v["hex"])
    rep = WrapReply.loads(raw)
    assert rep.relay == ipaddress.ip_address(v["addr"]) and rep.relay_port == int(v["port"])
    assert rep.relay.version == int(v["family"])
    assert (rep.carrier_port4, rep.carrier_port6) == (int(v["carrier4"]),
                                                      int(v["carrier6"]))
    assert rep.generation == int(v["generation"], 16)
    assert rep.token == bytes.fromhex(v["token"])
    assert rep.send_prefix == bytes.fromhex(v["send"])
    assert rep.reply_prefix == bytes.fromhex(v["reply"])
    assert rep.reply_mask == bytes.fromhex(v["mask"])
    assert rep.dumps() == raw
    assert WrapReply.body_len(raw[:32]) == len(raw) - 32
    with pytest.raises(control.WireError):   # a reader of the other replies refuses it
        control.Reply.loads(raw[:32])


@pytest.mark.parametrize("v", _load("bad-wrap"), ids=lambda v: v["name"])
def test_bad_wrap_vector(v: dict[str, str]) -> None:
    with pytest.raises(control.WireError):
        WrapReply.loads(bytes.fromhex(v["hex"]))


@pytest.mark.parametrize("v", _load("match"), ids=lambda v: v["name"])
def test_match_vector(v: dict[str, str]) -> None:
    wraps = {w["name"]: WrapReply.loads(bytes.fromhex(w["hex"])) for w in _load("wrap")}
    got = wraps[v["reply"]].reply_payload(bytes.fromhex(v["datagram"]))
    if v["payload"] == "drop":
        assert got is None
    else:
        assert got == (b"" if v["payload"] == "-" else bytes.fromhex(v["payload"]))


def test_a_reply_that_could_match_anything_is_refused() -> None:
    addr = ipaddress.ip_address("10.0.0.1")
    with pytest.raises(control.WireError):
        WrapReply(addr, 1, 1, bytes(8), b"x", b"", b"")
    with pytest.raises(control.WireError):
        WrapReply(addr, 1, 1, bytes(8), b"x", b"\1", b"\0")
    with pytest.raises(control.WireError):
        WrapReply(addr, 1, 1, bytes(7), b"x", b"\0", b"\xff")

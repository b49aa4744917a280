"""The Python side of the carried-datagram format (the CARRY reply and the envelope)
against the shared vectors (tests/vectors/datagram.txt), which the C tests read too."""

import errno
import ipaddress

import pytest

from socksify.protocol import control
from socksify.protocol.datagram import ENVELOPE_SIZE, Envelope, Kind
import wirevectors


def _load(kind: str) -> list[dict[str, str]]:
    return wirevectors.load("datagram.txt", kind)


def test_vectors_present() -> None:
    assert len(_load("carry")) >= 2
    envelopes = _load("envelope")
    assert {v["kind"] for v in envelopes} == {"0", "1"}
    assert {v["family"] for v in envelopes} == {"4", "6"}
    assert len(_load("bad-envelope")) >= 5


@pytest.mark.parametrize("v", _load("carry"), ids=lambda v: v["name"])
def test_carry_vector(v: dict[str, str]) -> None:
    raw = bytes.fromhex(v["hex"])
    rep = control.Reply.loads(raw)
    assert rep.verdict is control.Verdict.CARRY
    assert (rep.relay_port4, rep.relay_port6) == (int(v["port4"]), int(v["port6"]))
    assert rep.generation == int(v["generation"], 16)
    assert rep.carry_token == bytes.fromhex(v["token"])
    made = control.Reply.carry(int(v["port4"]), int(v["port6"]), int(v["generation"], 16),
                               bytes.fromhex(v["token"]))
    assert made.dumps() == raw


@pytest.mark.parametrize("v", _load("envelope"), ids=lambda v: v["name"])
def test_envelope_vector(v: dict[str, str]) -> None:
    raw = bytes.fromhex(v["hex"])
    payload = b"" if v["payload"] == "-" else bytes.fromhex(v["payload"])
    env, rest = Envelope.loads(raw)
    assert rest == payload
    assert env.kind == Kind(int(v["kind"]))
    assert env.addr == ipaddress.ip_address(v["addr"]) and env.port == int(v["port"])
    assert env.addr.version == int(v["family"])
    assert env.token == bytes.fromhex(v["token"])
    assert env.code == int(v["code"])
    expected = 0 if v["errno"] == "0" else getattr(errno, v["errno"])
    assert env.code.to_errno() == expected
    assert env.wrap(payload) == raw
    assert len(raw) == ENVELOPE_SIZE + len(payload)


@pytest.mark.parametrize("v", _load("bad-envelope"), ids=lambda v: v["name"])
def test_bad_envelope_vector(v: dict[str, str]) -> None:
    with pytest.raises(control.WireError):
        Envelope.loads(bytes.fromhex(v["hex"]))


def test_data_is_written_with_code_zero_and_tokens_are_eight_bytes() -> None:
    addr = ipaddress.ip_address("192.0.2.1")
    env = Envelope(Kind.DATA, addr, 1, bytes(8), control.Code.CONNREFUSED)
    assert env.dumps()[7] == 0
    with pytest.raises(control.WireError):
        Envelope.data(addr, 1, bytes(7)).dumps()
    with pytest.raises(control.WireError):
        control.Reply.carry(1, 0, 1, bytes(16))

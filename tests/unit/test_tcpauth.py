"""The TCP control handshake (docs/wire.md, protocol/tcpauth.py) against the shared
vectors (tests/vectors/tcpauth.txt), which the DLL's C test reads too (under Wine:
tests/windows/test_wine_tcpauth.py), and the Windows owner check of procinfo."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path
from typing import Callable

import psutil
import pytest

from socksify import procinfo
from socksify.protocol import tcpauth

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "tcpauth.txt"


def load(kind: str) -> list[dict[str, bytes]]:
    out = []
    for line in VECTORS.read_text().splitlines():
        if line and not line.startswith("#") and line.split()[0] == kind:
            out.append({k: bytes.fromhex(v) for k, v in
                        (w.split("=", 1) for w in line.split()[2:])})
    return out


def test_vectors_present() -> None:
    assert len(load("proof")) >= 3 and len(load("bad-answer")) >= 5


@pytest.mark.parametrize("v", load("proof"))
def test_proof_vector(v: dict[str, bytes]) -> None:
    key, nc, nd = v["key"], v["nc"], v["nd"]
    assert tcpauth.hello(nc) == v["hello"] == b"SKTC" + nc
    assert tcpauth.parse_hello(v["hello"]) == nc
    assert tcpauth.answer(key, nc, nd) == v["answer"]
    # the definition, spelled out independently of the module
    assert v["answer"] == nd + hmac.new(key, b"socksify tcp control v1 daemon" + nc + nd,
                                        hashlib.sha256).digest()
    assert v["proof"] == hmac.new(key, b"socksify tcp control v1 client" + nd + nc,
                                  hashlib.sha256).digest()
    assert tcpauth.check_answer(key, nc, v["answer"]) == nd
    assert tcpauth.proof(key, nc, nd) == v["proof"]
    tcpauth.check_proof(key, nc, nd, v["proof"])
    with pytest.raises(tcpauth.ProofError):      # the daemon's MAC is no client proof
        tcpauth.check_proof(key, nc, nd, v["answer"][16:])
    with pytest.raises(tcpauth.ProofError):
        tcpauth.check_proof(key, nc, nd, v["proof"][:-1])


@pytest.mark.parametrize("v", load("bad-answer"))
def test_bad_answer_vector(v: dict[str, bytes]) -> None:
    with pytest.raises(tcpauth.ProofError):
        tcpauth.check_answer(v["key"], v["nc"], v["answer"])


@pytest.mark.parametrize("data", [b"", b"SKTC", b"SKFY" + bytes(16), bytes(16),
                                  b"SKTC" + bytes(17)])
def test_not_a_hello(data: bytes) -> None:
    with pytest.raises(tcpauth.ProofError):
        tcpauth.parse_hello(data)


def test_windows_owner_decision() -> None:
    """process_uid on Windows: the daemon's own user (names compare case-blind) is
    own_uid(); another user, or one psutil may not read (AccessDenied, what Windows
    answers for another user's process), is OTHER_USER; a gone process None."""
    me = os.getpid()

    def users(table: dict[int, object]) -> Callable[[int], str]:
        def user_of(pid: int) -> str:
            v = table[pid]
            if isinstance(v, Exception):
                raise v
            return str(v)
        return user_of

    base = {me: "HOST\\alice"}
    assert procinfo.windows_uid(7, users({**base, 7: "host\\ALICE"})) == procinfo.own_uid()
    assert procinfo.windows_uid(7, users({**base, 7: "HOST\\bob"})) == procinfo.OTHER_USER
    assert procinfo.windows_uid(7, users({**base, 7: psutil.AccessDenied(7)})) \
        == procinfo.OTHER_USER
    assert procinfo.windows_uid(7, users({**base, 7: ""})) == procinfo.OTHER_USER
    assert procinfo.windows_uid(7, users({**base, 7: psutil.NoSuchProcess(7)})) is None
    assert procinfo.OTHER_USER != procinfo.own_uid()

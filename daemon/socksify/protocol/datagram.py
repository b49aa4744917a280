"""The datagram envelope (docs/wire.md, "Carried datagrams"), no I/O.

A datagram the shim carries for a program goes to the daemon's carrier port with 36
bytes before its payload: magic, version, kind (DATA or ERROR), the address family,
an error code, the port and address (the destination on the way to the daemon, the
source on the way back, as the program knows it: a stand-in stays a stand-in), and the
grant's 8-byte token from the CARRY reply."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from .control import (CARRY_TOKEN_SIZE, VERSION, Code, IPAddress, WireError, pack_addr,
                      unpack_addr)

MAGIC = b"SKDG"
ENVELOPE_SIZE = 36

_ENVELOPE = struct.Struct("!4sBBBBH2x16s8s")
assert _ENVELOPE.size == ENVELOPE_SIZE


class Kind(enum.IntEnum):
    DATA = 0
    ERROR = 1   # the flow's association failed or was lost: code says how


@dataclass(frozen=True)
class Envelope:
    """One envelope. addr:port is the destination (shim to daemon) or the source
    (daemon to shim); code is zero for DATA."""

    kind: Kind
    addr: IPAddress
    port: int
    token: bytes
    code: Code = Code.NONE

    def dumps(self) -> bytes:
        if len(self.token) != CARRY_TOKEN_SIZE:
            raise WireError(f"a grant's token is {CARRY_TOKEN_SIZE} bytes")
        family, raw = pack_addr(self.addr)
        code = self.code if self.kind is Kind.ERROR else Code.NONE
        return _ENVELOPE.pack(MAGIC, VERSION, self.kind, family, code, self.port, raw,
                              self.token)

    def wrap(self, payload: bytes) -> bytes:
        """The envelope, then the payload: one carried datagram."""
        return self.dumps() + payload

    @classmethod
    def data(cls, addr: IPAddress, port: int, token: bytes) -> Envelope:
        return cls(Kind.DATA, addr, port, token)

    @classmethod
    def error(cls, addr: IPAddress, port: int, token: bytes, code: Code) -> Envelope:
        return cls(Kind.ERROR, addr, port, token, code)

    @classmethod
    def loads(cls, datagram: bytes) -> tuple[Envelope, bytes]:
        """The envelope at the start of a datagram, and the payload after it; raise
        WireError for one too short, with another magic or version, an unknown kind or
        family. The token is not judged here."""
        if len(datagram) < ENVELOPE_SIZE:
            raise WireError(f"datagram of {len(datagram)} bytes has no envelope")
        magic, version, kind, family, code, port, raw, token = \
            _ENVELOPE.unpack_from(datagram)
        if magic != MAGIC:
            raise WireError(f"bad envelope magic {magic!r}")
        if version != VERSION:
            raise WireError(f"envelope version {version}, this daemon speaks {VERSION}")
        try:
            k = Kind(kind)
        except ValueError:
            raise WireError(f"unknown envelope kind {kind}") from None
        addr = unpack_addr(family, raw)
        if k is Kind.DATA:
            c = Code.NONE
        else:
            try:
                c = Code(code)
            except ValueError:
                c = Code.PROTO
        return cls(k, addr, port, token, c), datagram[ENVELOPE_SIZE:]

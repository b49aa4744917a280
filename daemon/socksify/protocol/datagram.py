"""The datagram envelope (docs/wire.md, "Carried datagrams"), no I/O.

A datagram the shim carries for a program goes to the daemon's carrier port with 36
bytes before its payload: magic, version, kind (DATA or ERROR), the address family,
an error code, the port and address (the destination on the way to the daemon, the
source on the way back, as the program knows it: a stand-in stays a stand-in), and the
grant's 8-byte token from the CARRY reply.

A WRAP reply (docs/wire.md, "Datagram handoff: WRAP") instead lets the shim send a
destination's datagrams from the program's socket straight to hop 1's UDP relay: the
reply names the relay and gives opaque bytes to put before each datagram, and a masked
prefix that marks the relay's datagrams that are replies from the destination."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from .control import (CARRY_TOKEN_SIZE, MAGIC as CONTROL_MAGIC, REPLY_SIZE, VERSION, Code,
                      IPAddress, Verdict, WireError, pack_addr, unpack_addr)

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


_WRAP_HEAD = struct.Struct("!4sBBBBHH16sHH")  # the 32-byte head of a WRAP reply
_WRAP_BODY = struct.Struct("!Q8sBB")          # generation, token, send_len, reply_len
assert _WRAP_HEAD.size == REPLY_SIZE
MAX_PREFIX = 255
MAX_WRAP_BODY = _WRAP_BODY.size + 3 * MAX_PREFIX


@dataclass(frozen=True)
class WrapReply:
    """WRAP (verdict 8): send this destination's datagrams from your own socket to
    relay:relay_port with send_prefix before each; a datagram from there whose first
    len(reply_prefix) bytes b satisfy b[i] & reply_mask[i] == reply_prefix[i] is the
    destination's reply, with that prefix stripped. generation and token as in CARRY
    (the token names the grant in an ERROR envelope from the carrier, whose loopback
    ports are carrier_port4 and carrier_port6)."""

    relay: IPAddress
    relay_port: int
    generation: int
    token: bytes
    send_prefix: bytes
    reply_prefix: bytes
    reply_mask: bytes
    carrier_port4: int = 0
    carrier_port6: int = 0

    def __post_init__(self) -> None:
        if len(self.token) != CARRY_TOKEN_SIZE:
            raise WireError(f"a grant's token is {CARRY_TOKEN_SIZE} bytes")
        if not 1 <= len(self.send_prefix) <= MAX_PREFIX:
            raise WireError(f"a send prefix is 1..{MAX_PREFIX} bytes")
        if not 1 <= len(self.reply_prefix) <= MAX_PREFIX:
            raise WireError(f"a reply prefix is 1..{MAX_PREFIX} bytes")
        if len(self.reply_mask) != len(self.reply_prefix):
            raise WireError("the reply mask is as long as the reply prefix")
        if any(p & ~m for p, m in zip(self.reply_prefix, self.reply_mask)):
            raise WireError("the reply prefix has bits its mask clears")
        if not 1 <= self.relay_port <= 65535:
            raise WireError(f"relay port {self.relay_port}")

    def dumps(self) -> bytes:
        family, raw = pack_addr(self.relay)
        body = (_WRAP_BODY.pack(self.generation, self.token, len(self.send_prefix),
                                len(self.reply_prefix))
                + self.send_prefix + self.reply_prefix + self.reply_mask)
        return _WRAP_HEAD.pack(CONTROL_MAGIC, VERSION, Verdict.WRAP, family, 0,
                               self.relay_port, len(body), raw, self.carrier_port4,
                               self.carrier_port6) + body

    @staticmethod
    def body_len(head: bytes) -> int:
        """How many bytes follow this 32-byte WRAP reply head; raise WireError if it
        is not one."""
        if len(head) != REPLY_SIZE:
            raise WireError(f"reply is {len(head)} bytes, expected {REPLY_SIZE}")
        magic, version, verdict, family, _, _, body_len, _, _, _ = _WRAP_HEAD.unpack(head)
        if magic != CONTROL_MAGIC or version != VERSION or verdict != Verdict.WRAP:
            raise WireError("not a WRAP reply")
        if family not in (4, 6):
            raise WireError(f"unknown address family {family}")
        if not _WRAP_BODY.size + 2 <= body_len <= MAX_WRAP_BODY:
            raise WireError(f"a WRAP reply's body is {body_len} bytes")
        return int(body_len)

    @classmethod
    def loads(cls, data: bytes) -> WrapReply:
        """Parse a whole WRAP reply: the head, then exactly body_len bytes."""
        body_len = cls.body_len(data[:REPLY_SIZE])
        body = data[REPLY_SIZE:]
        if len(body) != body_len:
            raise WireError(f"a WRAP reply's body is {body_len} bytes, got {len(body)}")
        _, _, _, family, _, port, _, raw, port4, port6 = _WRAP_HEAD.unpack(
            data[:REPLY_SIZE])
        generation, token, send_len, reply_len = _WRAP_BODY.unpack_from(body)
        rest = body[_WRAP_BODY.size:]
        if len(rest) != send_len + 2 * reply_len:
            raise WireError("a WRAP reply's prefixes do not fill its body")
        return cls(unpack_addr(family, raw), port, generation, token, rest[:send_len],
                   rest[send_len:send_len + reply_len], rest[send_len + reply_len:],
                   port4, port6)

    def reply_payload(self, datagram: bytes) -> bytes | None:
        """The destination's payload if this datagram from the relay carries the reply
        prefix, else None (the shim drops it)."""
        n = len(self.reply_prefix)
        if len(datagram) < n:
            return None
        if any(b & m != p for b, m, p in zip(datagram, self.reply_mask,
                                              self.reply_prefix)):
            return None
        return datagram[n:]

"""The handover on relay.sock (docs/wire.md "The isolation handover"), no I/O: which
of the descriptors `socksify --isolate` passes (SCM_RIGHTS) is which.

    "L"                                   every descriptor is a relay listener (the
                                          first form; no session)
    "S" SESSION(8 bytes) KIND...          one KIND byte per descriptor, in order:
        r  a relay listener (127.0.0.1 / ::1 on the daemon's relay port)
        R  a redirect listener (where the namespace's TCP connections arrive)
        u  a DNS socket, UDP (where the namespace's port-53 datagrams arrive)
        t  a DNS listener, TCP
        d  a NETLINK_SOCK_DIAG socket made in the namespace (the daemon looks a
           redirected connection up in the namespace's socket table with it)
        U  a UDP carrier socket (where the namespace's other datagrams arrive, to be
           carried through a chain: isolation/datagrams.py)
        c  a NETLINK_NETFILTER socket made in the namespace (the daemon asks its
           conntrack table where a carried datagram was going)

The daemon answers one byte, "L", once it serves them all."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .control import SESSION_SIZE

ACK = b"L"
LEGACY = b"L"
TAGGED = b"S"
MAX_FDS = 16
MAX_SIZE = 1 + SESSION_SIZE + MAX_FDS


class Kind(enum.Enum):
    RELAY = "r"
    REDIRECT = "R"
    DNS_UDP = "u"
    DNS_TCP = "t"
    SOCK_DIAG = "d"
    UDP_CARRIER = "U"
    CONNTRACK = "c"


@dataclass(frozen=True)
class Header:
    session: bytes            # all zero in the first form
    kinds: tuple[Kind, ...]

    def dumps(self) -> bytes:
        return TAGGED + self.session + "".join(k.value for k in self.kinds).encode()


def loads(data: bytes, nfds: int) -> Header:
    """The header that came with nfds descriptors; ValueError if it does not fit."""
    if data == LEGACY:
        return Header(bytes(SESSION_SIZE), (Kind.RELAY,) * nfds)
    if data[:1] != TAGGED or len(data) < 1 + SESSION_SIZE:
        raise ValueError(f"handover header {data[:16]!r}: neither 'L' nor 'S'+session")
    kinds = tuple(Kind(chr(b)) for b in data[1 + SESSION_SIZE:])
    if len(kinds) != nfds:
        raise ValueError(f"handover header names {len(kinds)} descriptors, {nfds} came")
    return Header(data[1:1 + SESSION_SIZE], kinds)

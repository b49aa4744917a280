"""The C shim library (libsocksify.so, LD_PRELOADed into programs): where it is, and its
pure wire functions through cffi, so the daemon can check it speaks the same wire format.

`python3 -m socksify.shimlib` prints the library's path.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from pathlib import Path
from typing import Any, TypedDict, cast

from .protocol.control import VERSION as WIRE_VERSION
from .protocol.control import WireError
from .shimpath import library_path as library_path  # re-exported

SHIM_ABI_VERSION = 6
"""The shim's exported-ABI version (socksify_shim_abi_version()) this package expects."""

REQUEST_SIZE = 48
REPLY_SIZE = 32
MAX_NAME = 255

_CDEF = """
struct socksify_connect_req {
    uint8_t family; uint8_t socktype; uint16_t port; uint8_t addr[16]; uint8_t session[8];
};
struct socksify_reply {
    uint8_t verdict; uint8_t code; uint8_t flags; uint16_t relay_port4; uint16_t relay_port6;
    uint8_t token[16];
};
struct socksify_peer {
    uint8_t family; uint16_t port; uint8_t addr[16];
};
unsigned socksify_wire_version(void);
unsigned socksify_shim_abi_version(void);
int socksify_wire_encode_request(unsigned op, const struct socksify_connect_req *req,
                                 uint8_t *out, size_t outlen);
int socksify_wire_encode_connect(const struct socksify_connect_req *req,
                                 uint8_t *out, size_t outlen);
int socksify_wire_encode_resolve(const char *name, unsigned family, const uint8_t session[8],
                                 uint8_t *out, size_t outlen);
int socksify_wire_decode_reply(const uint8_t *in, size_t len, struct socksify_reply *out);
int socksify_wire_decode_peer(const uint8_t *in, size_t len, struct socksify_peer *out);
int socksify_wire_decode_name(const uint8_t *in, size_t len, char *out, size_t outlen);
int socksify_wire_errno(unsigned code);
int socksify_addr_is_loopback(const void *sa, unsigned len);
"""


class ShimMismatch(RuntimeError):
    """The shim library is missing, or speaks another wire or ABI version."""


class ReplyFields(TypedDict):
    verdict: int
    code: int
    flags: int
    relay_port4: int
    relay_port6: int
    token: bytes


class PeerFields(TypedDict):
    family: int
    port: int
    addr: bytes  # 4 bytes for family 4, 16 for family 6


class Shim:
    """The library's exported pure functions."""

    def __init__(self, path: Path) -> None:
        import cffi  # type: ignore[import-untyped,unused-ignore]

        self.path = path
        self._ffi: Any = cffi.FFI()
        self._ffi.cdef(_CDEF)
        try:
            self._lib: Any = self._ffi.dlopen(str(path))
        except OSError as exc:
            raise ShimMismatch(
                f"cannot load the socksify shim {path}: {exc}. Reinstall socksify with "
                "`pip install .` (building the shim needs a C compiler, e.g. gcc)") from exc

    def wire_version(self) -> int:
        return int(self._lib.socksify_wire_version())

    def abi_version(self) -> int:
        return int(self._lib.socksify_shim_abi_version())

    def encode_connect(self, family: int, socktype: int, port: int, addr: bytes,
                       session: bytes = bytes(8)) -> bytes:
        """The 48-byte CONNECT request header; family 4/6, socktype 1/2 (wire values)."""
        return self.encode_request(1, family, socktype, port, addr, session)

    def encode_request(self, op: int, family: int, socktype: int, port: int, addr: bytes,
                       session: bytes = bytes(8)) -> bytes:
        """The 48-byte request header; op 1 CONNECT / 2 PEERNAME / 4 NAMEOF, family 4/6,
        socktype 1/2 (wire values)."""
        if len(addr) > 16 or len(session) != 8 or not 0 <= port <= 0xFFFF:
            raise ValueError("addr is at most 16 bytes, session 8, port 0..65535")
        req = self._ffi.new("struct socksify_connect_req *")
        req.family, req.socktype, req.port = family, socktype, port
        self._ffi.memmove(req.addr, addr, len(addr))
        self._ffi.memmove(req.session, session, 8)
        out = self._ffi.new("uint8_t[]", REQUEST_SIZE)
        n = int(self._lib.socksify_wire_encode_request(op, req, out, REQUEST_SIZE))
        if n < 0:
            raise ValueError(f"the shim refused to encode the request: {os.strerror(-n)}")
        return cast(bytes, self._ffi.buffer(out, n)[:])

    def encode_resolve(self, name: str | bytes, family: int = 0,
                       session: bytes = bytes(8)) -> bytes:
        """The RESOLVE request (48-byte header, then the name); family 0/4/6. Raise
        ValueError if the shim refuses the name (not 1..255 bytes of printable ASCII
        without space) or the family."""
        raw = name.encode("utf-8") if isinstance(name, str) else name
        if b"\0" in raw or len(session) != 8:
            raise ValueError("a name has no NUL byte, and a session is 8 bytes")
        out = self._ffi.new("uint8_t[]", REQUEST_SIZE + MAX_NAME)
        n = int(self._lib.socksify_wire_encode_resolve(raw, family, session, out,
                                                        REQUEST_SIZE + MAX_NAME))
        if n < 0:
            raise ValueError(f"the shim refused to encode the request: {os.strerror(-n)}")
        return cast(bytes, self._ffi.buffer(out, n)[:])

    def decode_reply(self, data: bytes) -> ReplyFields:
        """The reply's fields; raise WireError if the shim rejects the bytes."""
        rep = self._ffi.new("struct socksify_reply *")
        r = int(self._lib.socksify_wire_decode_reply(data, len(data), rep))
        if r < 0:
            raise WireError(f"the shim rejects the reply: {os.strerror(-r)}")
        return ReplyFields(verdict=int(rep.verdict), code=int(rep.code),
                           flags=int(rep.flags),
                           relay_port4=int(rep.relay_port4),
                           relay_port6=int(rep.relay_port6),
                           token=cast(bytes, self._ffi.buffer(rep.token, 16)[:]))

    def decode_peer(self, data: bytes) -> PeerFields:
        """A PEER reply's fields; raise WireError if the shim rejects the bytes."""
        peer = self._ffi.new("struct socksify_peer *")
        r = int(self._lib.socksify_wire_decode_peer(data, len(data), peer))
        if r < 0:
            raise WireError(f"the shim rejects the PEER reply: {os.strerror(-r)}")
        family = int(peer.family)
        return PeerFields(family=family, port=int(peer.port),
                          addr=cast(bytes, self._ffi.buffer(peer.addr,
                                                            4 if family == 4 else 16)[:]))

    def decode_name(self, data: bytes, outlen: int = MAX_NAME + 1) -> str:
        """A NAME reply's name (data: the 32-byte head and the name); raise WireError if
        the shim rejects the bytes, ValueError if outlen cannot hold the name and its
        NUL."""
        out = self._ffi.new("char[]", max(outlen, 1))
        n = int(self._lib.socksify_wire_decode_name(data, len(data), out, outlen))
        if n == -errno.ERANGE:
            raise ValueError(f"the name does not fit in {outlen} bytes with its NUL")
        if n < 0:
            raise WireError(f"the shim rejects the NAME reply: {os.strerror(-n)}")
        return cast(bytes, self._ffi.buffer(out, n)[:]).decode("ascii")

    def errno_for(self, code: int) -> int:
        return int(self._lib.socksify_wire_errno(code))

    def is_loopback(self, sockaddr: bytes) -> bool:
        """sockaddr: the raw bytes of a struct sockaddr_in/sockaddr_in6."""
        return bool(self._lib.socksify_addr_is_loopback(sockaddr, len(sockaddr)))


def load(path: Path | None = None) -> Shim:
    """Load the shim library (library_path() unless given); raise ShimMismatch."""
    return Shim(library_path() if path is None else path)


def check_versions(path: Path | None = None) -> None:
    """Raise ShimMismatch unless the shim speaks this package's wire and ABI versions."""
    shim = load(path)
    wire, abi = shim.wire_version(), shim.abi_version()
    if wire != WIRE_VERSION or abi != SHIM_ABI_VERSION:
        raise ShimMismatch(
            f"the socksify shim {shim.path} speaks wire version {wire} and ABI version "
            f"{abi}, but this daemon speaks wire version {WIRE_VERSION} and ABI version "
            f"{SHIM_ABI_VERSION}; reinstall socksify (`pip install .`) so both match")


def sockaddr_bytes(host: str, port: int) -> bytes:
    """The raw struct sockaddr_in/sockaddr_in6 of an IP address (Linux layout), for
    Shim.is_loopback()."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    packed = socket.inet_pton(family, host)
    head = family.to_bytes(2, sys.byteorder) + port.to_bytes(2, "big")
    if family == socket.AF_INET:
        return head + packed + bytes(8)
    return head + bytes(4) + packed + bytes(4)


def main() -> int:
    path = library_path()
    print(path)
    if not path.is_file():
        print(f"socksify: the shim library {path} is missing; reinstall socksify with "
              "`pip install .` (needs a C compiler)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

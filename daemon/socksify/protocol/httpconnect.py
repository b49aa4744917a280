"""HTTP CONNECT (RFC 9110 section 9.3.6) to a proxy, as bytes: the request out, the
reply's head in. No I/O.

Request:  CONNECT host:port HTTP/1.1 CRLF  Host: host:port CRLF
          [Proxy-Authorization: Basic base64(user:password) CRLF]  CRLF
Reply:    HTTP/1.x SP 3DIGIT SP reason CRLF  *(field-name ":" value CRLF)  CRLF
          Any 2xx opens the tunnel: the bytes right after the blank line are the
          target's (a 2xx answer to CONNECT has no content, whatever its headers say).
          Interim 1xx answers may come first; anything else is a refusal.

The head is bounded (MAX_HEAD bytes, MAX_FIELDS fields): the reader stops at the first
blank line and never consumes a byte after it (see sockstream.RawStream.read_until).
"""

from __future__ import annotations

import base64
import ipaddress
import re
from dataclasses import dataclass, field

HEAD_END = b"\r\n\r\n"
MAX_HEAD = 16384          # bytes of one reply head, blank line included
MAX_FIELDS = 100
MAX_INTERIM = 4           # 1xx heads tolerated before the final answer

_STATUS = re.compile(rb"HTTP/1\.[01] ([1-9][0-9][0-9])(?: ([\t\x20-\x7e\x80-\xff]*))?")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VALUE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_HOST = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=%-]+")


class ProtocolError(ValueError):
    """Bytes from an HTTP proxy that are not an HTTP/1.x reply head."""


@dataclass(frozen=True)
class ConnectRequest:
    """CONNECT host:port, with Basic credentials when `user` is set."""

    host: str
    port: int
    user: str = ""
    password: str = field(default="", repr=False)

    @property
    def authority(self) -> str:
        try:
            addr = ipaddress.ip_address(self.host)
        except ValueError:
            if not _HOST.fullmatch(self.host) or len(self.host) > 255:
                raise ValueError(f"{self.host!r} is not a host name HTTP can carry") \
                    from None
            return f"{self.host}:{self.port}"
        return f"[{addr}]:{self.port}" if addr.version == 6 else f"{addr}:{self.port}"

    def dumps(self) -> bytes:
        if not 0 < self.port <= 0xFFFF:
            raise ValueError(f"port {self.port} out of range")
        where = self.authority
        lines = [f"CONNECT {where} HTTP/1.1", f"Host: {where}"]
        if self.user:
            secret = f"{self.user}:{self.password}".encode()
            if any(c in secret for c in b"\r\n\0"):
                raise ValueError("the user name or password holds a line break or NUL")
            lines.append("Proxy-Authorization: Basic "
                         + base64.b64encode(secret).decode())
        return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass(frozen=True)
class Reply:
    status: int
    reason: str
    fields: tuple[tuple[str, str], ...] = ()

    @property
    def granted(self) -> bool:
        return 200 <= self.status < 300

    @property
    def interim(self) -> bool:
        return 100 <= self.status < 200

    @property
    def status_line(self) -> str:
        return f"{self.status} {self.reason}".rstrip()

    def get(self, name: str) -> str | None:
        low = name.lower()
        return next((v for k, v in self.fields if k.lower() == low), None)

    @classmethod
    def loads(cls, head: bytes) -> Reply:
        """Parse one complete reply head (status line through the blank line)."""
        if len(head) > MAX_HEAD:
            raise ProtocolError(f"reply head longer than {MAX_HEAD} bytes")
        if not head.endswith(HEAD_END):
            raise ProtocolError("reply head does not end with a blank line")
        lines = head[:-len(HEAD_END)].split(b"\r\n")
        status = _STATUS.fullmatch(lines[0])
        if status is None:
            shown = lines[0][:60].decode("ascii", "replace")
            raise ProtocolError(f"not an HTTP/1.x status line: {shown!r}")
        if len(lines) - 1 > MAX_FIELDS:
            raise ProtocolError(f"more than {MAX_FIELDS} header fields")
        fields = []
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN.fullmatch(name) \
                    or not _VALUE.fullmatch(value):
                shown = line[:60].decode("ascii", "replace")
                raise ProtocolError(f"malformed header field {shown!r}")
            fields.append((name.decode(), value.strip(b" \t").decode("latin-1")))
        reason = (status.group(2) or b"").decode("latin-1")
        return cls(int(status.group(1)), _printable(reason), tuple(fields))

    def dumps(self) -> bytes:
        """Server side (tests): the head as bytes."""
        out = [f"HTTP/1.1 {self.status} {self.reason}"]
        out += [f"{k}: {v}" for k, v in self.fields]
        return ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")


def _printable(text: str) -> str:
    """A reason phrase fit for one log line (at most 80 printable characters)."""
    return "".join(c if c.isprintable() else "?" for c in text)[:80]

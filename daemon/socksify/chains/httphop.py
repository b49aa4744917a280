"""An HTTP CONNECT hop: read its reply head exactly (never a byte past the blank
line: those are the tunnel's) within the chain's read timeout, and turn a refusal
into the errno a program should see."""

from __future__ import annotations

import asyncio
import errno

from ..errors import ChainError, HopProtocolError, HopRefused, HopTimeout, \
    RequestRefused
from ..protocol import httpconnect
from ..sockstream import RawStream, within

# status -> errno; any other non-2xx final answer is ECONNREFUSED
STATUS_ERRNO: dict[int, int] = {
    407: errno.EACCES,        # proxy authentication required (or refused)
    401: errno.EACCES,        # tinyproxy's answer to wrong Basic credentials
    403: errno.EACCES,        # the proxy forbids this destination
    502: errno.ECONNREFUSED,  # bad gateway: the next hop or target failed
    503: errno.ECONNREFUSED,  # squid: the target refused, or its name did not resolve
    504: errno.ETIMEDOUT,     # gateway timeout: the target did not answer
}


async def read_reply(stream: RawStream, timeout: float, me: str, during: str,
                     blame: int, index: int) -> httpconnect.Reply:
    """The final reply head (1xx interim heads skipped, at most MAX_INTERIM). A hop
    that closes, resets or times out while asked is blamed at `blame` (as a SOCKS
    refusal is); one that sends what is not an HTTP reply head at `index`."""
    for _ in range(httpconnect.MAX_INTERIM + 1):
        try:
            head = await within(stream.read_until(httpconnect.HEAD_END,
                                                  httpconnect.MAX_HEAD), timeout)
            reply = httpconnect.Reply.loads(head)
        except asyncio.TimeoutError:
            raise HopTimeout(f"{me}: no HTTP reply within {timeout:g}s to {during}",
                             hop=blame) from None
        except asyncio.IncompleteReadError as exc:
            raise HopRefused(f"{me}: closed after {len(exc.partial)} bytes of the HTTP "
                             f"reply head to {during}", hop=blame) from None
        except asyncio.LimitOverrunError:
            raise HopProtocolError(f"{me}: HTTP reply head to {during} longer than "
                                   f"{httpconnect.MAX_HEAD} bytes", hop=index) from None
        except httpconnect.ProtocolError as exc:
            raise HopProtocolError(f"{me}: {exc}", hop=index) from None
        except OSError as exc:
            raise HopRefused(f"{me}: {exc.strerror or exc} in reply to {during}",
                             hop=blame) from None
        if not reply.interim or reply.status == 101:
            return reply
    raise HopProtocolError(f"{me}: more than {httpconnect.MAX_INTERIM} interim replies "
                           f"to {during}", hop=index)


def refusal(reply: httpconnect.Reply, me: str, during: str, blame: int,
            index: int, user: str) -> ChainError:
    """The error for a final answer that is not 2xx, naming its status line. A 407
    (or 401, which tinyproxy sends for a wrong password) is the hop's own doing (its
    credentials), so it is blamed itself."""
    if reply.status in (401, 407):
        how = f"Basic credentials of user {user!r} refused" if user \
            else "the hop URL has no user:password"
        return RequestRefused(f"{me}: proxy authentication required ({how}): "
                              f"HTTP {reply.status_line} to {during}", hop=index,
                              err=errno.EACCES)
    return RequestRefused(f"{me}: {during} refused: HTTP {reply.status_line}",
                          hop=blame, err=STATUS_ERRNO.get(reply.status, errno.ECONNREFUSED))

"""One hop's part of a chain negotiation, as messages: the bytes to send and the check
of the reply each one gets (read exactly, in order). A negotiation (pipeline.py) sends
them one at a time, or several at once; a message marked `barrier` decides what comes
next, so nothing after it is sent before its reply is in.

A hop protocol drops in by giving its messages: a request's bytes from the protocol
module (socks4.ConnectRequest.dumps()) and a check that reads its reply and parses it
(socks4.Reply.loads()). The errors are those of the sequential engine before
pipelining: the same errno, blamed on the same hop, with the same text."""

from __future__ import annotations

import asyncio
import errno
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterator

from ..errors import ChainError, HopProtocolError, HopRefused, HopTimeout, \
    HopUnreachable, RequestRefused, Unsupported
from ..protocol import httpconnect, socks4, socks5
from ..proxies import Proxy
from ..sockstream import RawStream
from . import httphop
from .earlydata import EarlyData
from .streamauth import StreamAuth

log = logging.getLogger("socksify.chain")

# SOCKS5 reply codes -> the errno the application sees
_SOCKS5_ERRNO: dict[int, int] = {
    socks5.ReplyCode.NETWORK_UNREACHABLE: errno.ENETUNREACH,
    socks5.ReplyCode.HOST_UNREACHABLE: errno.EHOSTUNREACH,
    socks5.ReplyCode.CONNECTION_REFUSED: errno.ECONNREFUSED,
    socks5.ReplyCode.TTL_EXPIRED: errno.ETIMEDOUT,
    socks5.ReplyCode.ADDRESS_TYPE_NOT_SUPPORTED: errno.EAFNOSUPPORT,
}


@dataclass
class Message:
    """Bytes for one hop, and the check of its reply (raises a ChainError)."""

    data: bytes
    check: Callable[[], Awaitable[None]]
    step: Step
    barrier: bool = False      # what follows depends on this reply
    # the fewest bytes its reply can be, for a reply that may be waited for together
    # with the replies before it (a CONNECT's: a hop that refuses one closes the
    # connection, which wakes the daemon at once); 0: each such wait ends at it
    least: int = 0
    # a reply the hop may send and then keep the connection open with nothing more
    # (a SOCKS5 greeting refused with 0xFF): waited for together with the replies
    # before it, never with those behind it
    last: bool = False


@dataclass
class Step:
    """The request to one hop: ask `hop` (route index `index`) to connect to
    host:port. A refusal is blamed on the next hop (index + 1), or on the target when
    index is the last hop; a hop that breaks the protocol is blamed itself. `broke`
    is set when a reply did not come as a reply (closed, reset, silence, garbage):
    what a hop that mishandles early data would do, unlike a refusal code."""

    stream: RawStream
    hop: Proxy
    index: int
    host: str
    port: int
    timeout: float
    route_len: int
    conn: str
    early: EarlyData
    auth: StreamAuth | None = None     # stream isolation: used where the hop has none
    command: int = socks5.CMD_CONNECT  # or UDP ASSOCIATE (chains/udp.py), SOCKS5 only
    reply: socks5.Reply | None = None  # the SOCKS5 reply, once granted
    broke: bool = False
    method: int | None = None
    offered: tuple[int, ...] = field(default_factory=tuple)

    @property
    def credentials(self) -> tuple[str, str]:
        """The SOCKS5 user name and password: the hop's own (explicit credentials
        win), else the stream isolation ones, else none (empty)."""
        if not self.hop.user and self.auth is not None:
            return self.auth.user, self.auth.password
        return self.hop.user or "", self.hop.password or ""

    @property
    def verb(self) -> str:
        return "CONNECT" if self.command == socks5.CMD_CONNECT else "UDP ASSOCIATE"

    @property
    def blame(self) -> int:
        """Who a refusal is blamed on: the next hop for a CONNECT; the hop itself for
        a UDP ASSOCIATE, which only it answers."""
        return self.index + 1 if self.command == socks5.CMD_CONNECT else self.index

    @property
    def what(self) -> str:
        target = f"{self.host}:{self.port}"
        if self.command != socks5.CMD_CONNECT or self.blame >= self.route_len:
            return target
        return f"hop {self.blame + 1} {target}"

    @property
    def me(self) -> str:
        return f"hop {self.index + 1} {self.hop}"

    def unsent(self, exc: OSError) -> HopUnreachable:
        """The error for bytes that could not be written to the stream."""
        self.broke = True
        return HopUnreachable(f"{self.me}: {exc.strerror or exc}", hop=self.index,
                              err=exc.errno or errno.ECONNRESET)

    async def read(self, size: int, during: str | None = None,
                   request: bool = True, rest: int = 0) -> bytes:
        """Read a reply. While waiting for a CONNECT reply (request=True), a hop that
        closes or resets has failed that request, and the failure is blamed where a
        refusal would be: danted, for one, sends SOCKS5 'connection refused' and resets
        at once, and asyncio reports the reset before the bytes that preceded it.
        Before that (greeting, authentication), the hop itself is at fault. `during`
        names what was asked (None: this step's CONNECT, named only if it fails);
        `rest`: the bytes at least that the reply brings after these (RawStream)."""
        try:
            return await self.stream.read_within(size, self.timeout, rest)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError, OSError) as exc:
            raise self._unread(exc, during or f"{self.verb} {self.what}",
                               self.blame if request else self.index) from None

    def _unread(self, exc: BaseException, during: str, blame: int) -> ChainError:
        """The error for a reply that did not come (timeout, EOF, reset)."""
        self.broke = True
        if isinstance(exc, asyncio.TimeoutError):
            return HopTimeout(f"{self.me}: no reply within {self.timeout:g}s to "
                              f"{during}", hop=blame)
        if isinstance(exc, asyncio.IncompleteReadError):
            return HopRefused(f"{self.me}: closed after {len(exc.partial)} reply bytes "
                              f"to {during}", hop=blame)
        assert isinstance(exc, OSError)
        return HopRefused(f"{self.me}: {exc.strerror or exc} in reply to {during}",
                          hop=blame)

    def broken(self, exc: Exception) -> HopProtocolError:
        self.broke = True
        return HopProtocolError(f"{self.me}: {exc}", hop=self.index)

    def encode(self, request: socks4.ConnectRequest | socks5.ConnectRequest
               | httpconnect.ConnectRequest) -> bytes:
        try:
            return request.dumps()
        except ValueError as exc:
            raise Unsupported(f"{self.me}: cannot ask for {self.what}: {exc}") from None

    def granted(self) -> None:
        log.debug("[%s] hop %d %s -> %s:%d granted", self.conn, self.index + 1,
                  self.hop, self.host, self.port)

    def messages(self, pipelined: bool) -> Iterator[Message]:
        """This hop's messages, in order. A generator: a barrier's reply has been
        read by the time the next message is asked for. A new hop protocol adds its
        scheme here (a hop whose replies cannot be read exactly, or that must not
        get bytes behind a request, marks its messages as barriers)."""
        if self.hop.protocol == "socks5":
            return self._socks5(pipelined)
        if self.hop.protocol == "http":
            return self._http()
        if self.hop.protocol in ("socks4", "socks4a"):
            return self._socks4()
        raise Unsupported(f"{self.me}: no negotiation for {self.hop.scheme}://")

    # --- HTTP CONNECT ----------------------------------------------------------------

    def _http(self) -> Iterator[Message]:
        yield Message(self.encode(httpconnect.ConnectRequest(
            self.host, self.port, self.hop.user, self.hop.password)),
            self._http_reply, self)

    async def _http_reply(self) -> None:
        during = f"CONNECT {self.what}"
        try:    # the head read exactly: bytes after its blank line are the next hop's
            reply = await httphop.read_reply(self.stream, self.timeout, self.me, during,
                                             self.blame, self.index)
        except ChainError:
            self.broke = True       # closed, silent or not HTTP: no proper reply
            raise
        if not reply.granted:
            raise httphop.refusal(reply, self.me, during, self.blame, self.index,
                                  self.hop.user)
        self.granted()

    # --- SOCKS4 / 4a -----------------------------------------------------------------

    def _socks4(self) -> Iterator[Message]:
        try:        # the same few requests on every connect: encoded once
            data = socks4.connect_request(self.host, self.port, self.hop.user)
        except ValueError:
            data = self.encode(socks4.ConnectRequest(self.host, self.port,
                                                     self.hop.user))   # raises
        yield Message(data, self._socks4_reply, self, least=socks4.REPLY_SIZE)

    async def _socks4_reply(self) -> None:
        data = await self.read(socks4.REPLY_SIZE)
        if socks4.is_grant(data):       # else parsed in full, for the error
            self.granted()
            return
        try:
            reply = socks4.Reply.loads(data)
        except socks4.ProtocolError as exc:
            raise self.broken(exc) from None
        if not reply.granted:
            raise RequestRefused(f"{self.me}: CONNECT {self.what} refused, code "
                                 f"{reply.describe()}", hop=self.blame)
        self.granted()

    # --- SOCKS5 ----------------------------------------------------------------------

    def _socks5(self, pipelined: bool) -> Iterator[Message]:
        """Greeting, [username/password], CONNECT. With a user name the greeting
        offers "no auth" and username/password, and the hop's choice decides whether
        the credentials follow (a barrier); when pipelined to a hop known to choose
        username/password, it offers only that, and the credentials and the request
        follow at once."""
        user, password = self.credentials
        if user and pipelined and self.early.userpass(self.hop):
            self.offered = (socks5.METHOD_USERPASS,)
        elif user:
            self.offered = (socks5.METHOD_NO_AUTH, socks5.METHOD_USERPASS)
        else:
            self.offered = (socks5.METHOD_NO_AUTH,)
        yield Message(socks5.Greeting(self.offered).dumps(), self._choice, self,
                      barrier=len(self.offered) > 1, least=socks5.MethodChoice.SIZE,
                      last=True)
        if self.offered == (socks5.METHOD_USERPASS,) or \
                self.method == socks5.METHOD_USERPASS:
            yield Message(socks5.UserPassAuth(user, password).dumps(),
                          self._auth_reply, self)
        yield Message(self.encode(socks5.ConnectRequest(self.host, self.port,
                                                        self.command)),
                      self._socks5_reply, self, least=socks5.Reply.usual_size)

    async def _choice(self) -> None:
        try:
            choice = socks5.MethodChoice.loads(await self.read(2, "the greeting",
                                                               request=False))
        except socks5.ProtocolError as exc:
            raise self.broken(exc) from None
        if choice.method not in self.offered or (choice.method == socks5.METHOD_USERPASS
                                                 and not self.credentials[0]):
            if self.offered == (socks5.METHOD_USERPASS,):
                self.early.set_userpass(self.hop, False)    # ask as before, next time
            raise RequestRefused(f"{self.me}: accepts none of our authentication "
                                 f"methods (answered {choice.method:#x})", hop=self.index)
        self.method = choice.method

    async def _auth_reply(self) -> None:
        try:
            auth = socks5.AuthReply.loads(await self.read(2, "authentication",
                                                          request=False))
        except socks5.ProtocolError as exc:
            raise self.broken(exc) from None
        if not auth.ok:
            raise RequestRefused(f"{self.me}: user {self.credentials[0]!r} was refused "
                                 f"(status {auth.status})", hop=self.index)
        self.early.set_userpass(self.hop, True)

    async def _socks5_reply(self) -> None:
        try:
            head = await self.read(socks5.Reply.head_size, rest=socks5.Reply.usual_size
                                   - socks5.Reply.head_size)
            rest = await self.read(socks5.Reply.rest_size(head))
            reply = socks5.Reply.loads(head + rest)
        except socks5.ProtocolError as exc:
            raise self.broken(exc) from None
        if not reply.granted:
            raise RequestRefused(f"{self.me}: {self.verb} {self.what} refused, code "
                                 f"{reply.describe()}", hop=self.blame,
                                 err=_SOCKS5_ERRNO.get(reply.code, errno.ECONNREFUSED))
        self.reply = reply
        self.granted()


def suspects(batch: list[Message], failed: int, early: EarlyData) -> list[Proxy]:
    """The hops that may have mishandled early data when message `failed` of a batch
    sent at once got no proper reply: those with a message before the batch's last
    one (bytes came in behind it), up to the failed one, and not known to cope."""
    out: list[Proxy] = []
    for msg in batch[:min(failed + 1, len(batch) - 1)]:
        hop = msg.step.hop
        if hop not in out and not early.good(hop):
            out.append(hop)
    return out


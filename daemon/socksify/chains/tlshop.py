"""TLS to a hop (https://, socks5+tls://): a TLS session with the hop over the stream
that reaches it (the daemon's TCP socket for hop 1; the tunnel through the hops
before it for a later hop, so TLS to a middle hop runs inside the tunnel), then the
hop's own protocol inside.

The rest of the chain engine, the pool and the relay work on plain sockets with
exact reads, so a TLS session is carried by a pump: a private loopback TCP pair
whose one end stands for the plaintext of the session. The pump copies between the
other end and the TLS stream; a reset on either side resets the other. A TLS
session lives in the daemon, so a chain with a TLS hop is always relayed, never
handed off to the program (spec.py forces data_path = "relay").

The session is an ssl.SSLObject over memory BIOs, driven here on the raw socket, so
its end is seen for what it is: the program's half-close is sent as close_notify
(TLS 1.3 lets the other direction go on), the hop's close_notify becomes a FIN to the
program, and a session cut without close_notify (a truncation) a reset."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import struct

from ..errors import HopProtocolError, HopRefused, HopTimeout, HopUnreachable
from ..proxies import Proxy
from ..sockstream import RawStream, within

log = logging.getLogger("socksify.chain")

CHUNK = 1 << 18
_RESET = struct.pack("ii", 1, 0)
_CONTEXTS: dict[tuple[bool, str | None], ssl.SSLContext] = {}
_PUMPS: set[asyncio.Task[None]] = set()


def context(hop: Proxy) -> ssl.SSLContext:
    """The client context for hop: the system's CA store (or only hop.ca_file), host
    name checked; no verification at all only for tls_verify = false."""
    key = (hop.tls_verify, hop.ca_file)
    ctx = _CONTEXTS.get(key)
    if ctx is None:
        ctx = ssl.create_default_context(cafile=hop.ca_file)
        if not hop.tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        _CONTEXTS[key] = ctx
    return ctx


class TlsStream(RawStream):
    """The plaintext end of a TLS session to a hop. close() (a chain that failed
    later on) also ends the pump and the stream the session ran over."""

    def __init__(self, sock: socket.socket, pump: asyncio.Task[None],
                 under: RawStream) -> None:
        super().__init__(sock, owned=True)
        self.pump = pump
        self.under = under

    def close(self) -> None:
        super().close()
        self.pump.cancel()
        self.under.close()


async def wrap(stream: RawStream, hop: Proxy, index: int, timeout: float,
               conn: str) -> TlsStream:
    """TLS with route[index] = hop over `stream` (which must be the daemon's own):
    the certificate checked against hop's host name. Errors: EACCES for a
    certificate refused, ETIMEDOUT, else the hop is broken or unreachable."""
    me = f"hop {index + 1} {hop}"
    try:
        ctx = context(hop)
    except (OSError, ssl.SSLError) as exc:
        raise HopUnreachable(f"{me}: cannot load the CA file {hop.ca_file}: {exc}",
                             hop=index, err=errno.EACCES) from None
    if stream.sock.family in (socket.AF_INET, socket.AF_INET6) \
            and hasattr(socket, "TCP_QUICKACK"):
        # the handshake is a few small writes each way: no delayed ACK between them
        stream.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    session = Session(stream.sock, ctx.wrap_bio(incoming, outgoing,
                                                server_hostname=hop.host),
                      incoming, outgoing)
    try:
        await within(session.handshake(), timeout)
    except ssl.SSLCertVerificationError as exc:
        stream.close()
        raise HopRefused(f"{me}: TLS certificate refused: {exc.verify_message} "
                         f"(name checked: {hop.host}; ca_file "
                         f"{hop.ca_file or 'none: the system store'})", hop=index,
                         err=errno.EACCES) from None
    except asyncio.TimeoutError:
        stream.close()
        raise HopTimeout(f"{me}: no TLS handshake within {timeout:g}s",
                         hop=index) from None
    except ssl.SSLError as exc:
        stream.close()
        raise HopProtocolError(f"{me}: TLS handshake failed: {exc.reason or exc}",
                               hop=index) from None
    except OSError as exc:
        stream.close()
        raise HopUnreachable(f"{me}: TLS handshake: {exc.strerror or exc}", hop=index,
                             err=exc.errno or errno.ECONNRESET) from None
    try:
        inner, outer = _loopback_pair()
    except OSError as exc:
        stream.close()
        raise HopUnreachable(f"{me}: no loopback pair for the TLS pump: {exc}",
                             hop=index, err=exc.errno or errno.EMFILE) from None
    tls = session.tls
    log.debug("[%s] %s: %s %s, certificate %s", conn, me, tls.version(),
              (tls.cipher() or ("?",))[0],
              "verified for " + hop.host if hop.tls_verify else "NOT verified "
              "(tls_verify = false)")
    outer.setblocking(False)
    task = asyncio.get_running_loop().create_task(session.pump(outer, conn, me))
    _PUMPS.add(task)
    task.add_done_callback(_PUMPS.discard)
    return TlsStream(inner, task, stream)


def _loopback_pair() -> tuple[socket.socket, socket.socket]:
    """Two connected loopback TCP sockets (a socketpair could not carry a reset).
    The listener lives for one accept, and its one connection must be ours."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        inner = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            inner.connect(listener.getsockname())
            outer, peer = listener.accept()
            if peer != inner.getsockname():
                outer.close()
                raise OSError(errno.EACCES, f"a stranger ({peer}) connected first")
        except BaseException:
            inner.close()
            raise
    finally:
        listener.close()
    for s in (inner, outer):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return inner, outer


class Session:
    """A TLS client session (SSLObject over memory BIOs) on a raw non-blocking
    socket: the handshake, then the pump between the session and `outer`."""

    def __init__(self, raw: socket.socket, tls: ssl.SSLObject, incoming: ssl.MemoryBIO,
                 outgoing: ssl.MemoryBIO) -> None:
        self.raw = raw
        self.tls = tls
        self.incoming = incoming
        self.outgoing = outgoing
        self.loop = asyncio.get_running_loop()
        self.lock = asyncio.Lock()

    async def flush(self) -> None:
        """Send what the session has written, in order (both directions write)."""
        async with self.lock:
            data = self.outgoing.read()
            if data:
                await self.loop.sock_sendall(self.raw, data)

    async def fill(self) -> bool:
        """Feed the session what the socket has; False at the socket's EOF."""
        data = await self.loop.sock_recv(self.raw, CHUNK)
        if data:
            self.incoming.write(data)
            return True
        self.incoming.write_eof()
        return False

    async def handshake(self) -> None:
        while True:
            try:
                self.tls.do_handshake()
                await self.flush()
                return
            except ssl.SSLWantReadError:
                await self.flush()
                if not await self.fill():
                    raise ConnectionResetError(errno.ECONNRESET,
                                               "closed during the TLS handshake")

    async def pump(self, outer: socket.socket, conn: str, me: str) -> None:
        """Copy between outer and the session until both directions end: a
        half-close either way is carried (close_notify one way, FIN the other); a
        failure, or a session cut without close_notify, resets both."""
        up = asyncio.ensure_future(self._up(outer))
        down = asyncio.ensure_future(self._down(outer))
        failed: BaseException | None = None
        try:
            for fut in asyncio.as_completed((up, down)):
                await fut
        except asyncio.CancelledError:
            failed = ConnectionAbortedError("the chain failed")
            raise
        except (OSError, ssl.SSLError) as exc:
            failed = exc
        finally:
            up.cancel()
            down.cancel()
            if failed is not None:
                log.info("[%s] %s: TLS session ended: %s", conn, me, failed)
                for sock in (outer, self.raw):
                    try:
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
                    except OSError:
                        pass
            outer.close()
            self.raw.close()

    async def _up(self, outer: socket.socket) -> None:
        while data := await self.loop.sock_recv(outer, CHUNK):
            self.tls.write(data)
            await self.flush()
        try:                       # the program's half-close: close_notify
            self.tls.unwrap()
        except ssl.SSLWantReadError:
            pass
        await self.flush()

    async def _down(self, outer: socket.socket) -> None:
        while True:
            more = await self.fill()
            while True:
                try:
                    data = self.tls.read(CHUNK)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:
                    data = b""
                except ssl.SSLEOFError:
                    raise ConnectionResetError(errno.ECONNRESET, "the TLS session was "
                                               "cut without close_notify") from None
                if not data and not more:
                    # the socket's EOF was fed with no close_notify before it: a
                    # truncation. (Python 3.11.2, Debian 12's, reads it as b"" where
                    # later versions raise SSLEOFError.) A close_notify is always
                    # read before that EOF: each fill is drained to SSLWantReadError.
                    raise ConnectionResetError(errno.ECONNRESET, "the TLS session was "
                                               "cut without close_notify")
                if not data:                       # close_notify: the far side's FIN
                    await self.flush()
                    outer.shutdown(socket.SHUT_WR)
                    return
                await self.loop.sock_sendall(outer, data)
            await self.flush()      # e.g. an answer to a key update
            if not more:
                raise ConnectionResetError(errno.ECONNRESET, "the TLS session was cut "
                                           "without close_notify")

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

TLS carries no half-close here: when the program shuts down its sending side, the
session stays open while the far side still sends, and is closed once it has been
quiet for LINGER seconds (or closes)."""

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

LINGER = 5.0               # seconds a half-closed session waits for the far side
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
                 session: asyncio.StreamWriter, under: RawStream) -> None:
        super().__init__(sock, owned=True)
        self.pump = pump
        self.session = session
        self.under = under

    def close(self) -> None:
        super().close()
        self.pump.cancel()
        self.session.transport.abort()   # unregisters its socket before closing it
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
    try:
        reader, writer = await within(asyncio.open_connection(
            sock=stream.sock, ssl=ctx, server_hostname=hop.host,
            ssl_handshake_timeout=timeout, limit=CHUNK), timeout)
    except ssl.SSLCertVerificationError as exc:
        stream.close()
        raise HopRefused(f"{me}: TLS certificate refused: {exc.verify_message} "
                         f"(name checked: {hop.host}; ca_file "
                         f"{hop.ca_file or 'none: the system store'})", hop=index,
                         err=errno.EACCES) from None
    except (asyncio.TimeoutError, ConnectionAbortedError):
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
        writer.transport.abort()
        raise HopUnreachable(f"{me}: no loopback pair for the TLS pump: {exc}",
                             hop=index, err=exc.errno or errno.EMFILE) from None
    tls = writer.get_extra_info("ssl_object")
    log.debug("[%s] %s: %s %s, certificate %s", conn, me,
              tls.version() if tls else "?", tls.cipher()[0] if tls else "?",
              "verified for " + hop.host if hop.tls_verify else "NOT verified "
              "(tls_verify = false)")
    task = asyncio.get_running_loop().create_task(_pump(outer, reader, writer, conn, me))
    _PUMPS.add(task)
    task.add_done_callback(_PUMPS.discard)
    return TlsStream(inner, task, writer, stream)


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


async def _pump(outer: socket.socket, tls_reader: asyncio.StreamReader,
                tls_writer: asyncio.StreamWriter, conn: str, me: str) -> None:
    """Copy between `outer` and the TLS session until either ends."""
    plain_reader, plain_writer = await asyncio.open_connection(sock=outer, limit=CHUNK)
    moved = [0]

    async def up() -> None:
        while data := await plain_reader.read(CHUNK):
            tls_writer.write(data)
            await tls_writer.drain()
        while True:           # half-closed: wait while the far side still talks
            seen = moved[0]
            await asyncio.sleep(LINGER)
            if moved[0] == seen:
                return

    async def down() -> None:
        while data := await tls_reader.read(CHUNK):
            moved[0] += len(data)
            plain_writer.write(data)
            await plain_writer.drain()
        if plain_writer.can_write_eof():
            plain_writer.write_eof()

    tasks = [asyncio.ensure_future(up()), asyncio.ensure_future(down())]
    failed: BaseException | None = None
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for t in done:
            if t.exception() is not None:
                failed = t.exception()
    except asyncio.CancelledError:
        failed = ConnectionAbortedError("the chain failed")
        raise
    finally:
        for t in tasks:
            t.cancel()
        if failed is not None:
            log.info("[%s] %s: TLS session ended: %s", conn, me, failed)
            try:
                outer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
            except OSError:
                pass
            tls_writer.transport.abort()
        else:
            tls_writer.close()
        plain_writer.close()

"""The isolated program's name server: every DNS query the program sends (UDP or TCP,
port 53, to whatever address its resolv.conf names) is redirected inside its network
namespace to a socket this module serves in the daemon. Each question goes to an
Answerer (answers.py decides by the policy); nothing is ever forwarded to another
server, so a name leaves the machine only as the Answerer decides.

What is answered: one question per message (RFC 9619: QDCOUNT > 1 is FORMERR); class
IN; A and AAAA with addresses; any other data type with the Answerer's verdict and no
records (NOERROR/NODATA, or its error); meta types (AXFR, IXFR, ANY, ...) and opcodes
other than QUERY with NOTIMP. EDNS is echoed (our payload 1232, RFC 9715; version >
0 gets BADVERS); a UDP reply larger than the client's payload is truncated with TC set,
so the client retries over TCP (two-byte length framing, RFC 1035 4.2.2, pipelined
queries answered as they are ready, RFC 7766). The question is echoed in the case it
came in (resolvers that randomise case, "0x20", check it); the Answerer sees it in
lower case. Malformed input is dropped (no header, or a response) or answered FORMERR;
sizes, connections and queries in flight per peer are bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import socket
import struct
from dataclasses import dataclass
from typing import Protocol

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

log = logging.getLogger("socksify.daemon")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_QUERY = 4096        # bytes: a query is one question and an OPT record
MAX_UDP_REPLY = 1232    # our EDNS payload: the DNS flag day 2020 size (RFC 9715)
PLAIN_UDP_REPLY = 512   # without EDNS (RFC 1035)
PER_PEER = 16           # queries in flight per peer address (UDP and TCP together)
IN_FLIGHT = 256         # queries in flight per server
TCP_PER_PEER = 8        # open TCP connections per peer address
TCP_IDLE = 10.0         # seconds a TCP connection may wait for its next query
ANSWER_TIMEOUT = 8.0    # seconds an Answerer may take before the reply is SERVFAIL
_LABEL = re.compile(r"[a-z0-9_-]{1,63}\Z")
_HEADER = struct.Struct("!HH")
_PKTINFO4 = struct.Struct("=I4s4s")   # struct in_pktinfo: ifindex, spec_dst, addr
_PKTINFO6 = struct.Struct("=16sI")    # struct in6_pktinfo: addr, ifindex
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)   # Linux's value; not in every typeshed


@dataclass(frozen=True)
class Question:
    name: str       # lower case, no final dot: "example.com"
    qtype: int      # a dns.rdatatype value: A, AAAA or another data type


@dataclass(frozen=True)
class Peer:
    host: str       # the querying program's address and port, inside its namespace
    port: int
    transport: str  # "udp" | "tcp"

    def __str__(self) -> str:
        return f"{self.transport}:{self.host}:{self.port}"


@dataclass(frozen=True)
class Answer:
    rcode: int = dns.rcode.NOERROR   # NOERROR, NXDOMAIN, SERVFAIL, REFUSED
    addresses: tuple[IPAddress, ...] = ()   # for A / AAAA: those of that family count
    ttl: int = 60


class Answerer(Protocol):
    async def answer(self, question: Question, peer: Peer) -> Answer:
        """The answer to one question. Called only for class IN data types whose name
        is a host name; may raise (the reply is then SERVFAIL)."""
        ...


def address_version(qtype: int) -> int | None:
    """The IP version a question of this type asks for: 4 (A), 6 (AAAA) or None."""
    return 4 if qtype == dns.rdatatype.A else 6 if qtype == dns.rdatatype.AAAA else None


class _Limits:
    """Queries in flight, per peer address and in all."""

    def __init__(self) -> None:
        self.by_peer: dict[str, int] = {}
        self.total = 0

    def take(self, host: str) -> bool:
        if self.total >= IN_FLIGHT or self.by_peer.get(host, 0) >= PER_PEER:
            return False
        self.by_peer[host] = self.by_peer.get(host, 0) + 1
        self.total += 1
        return True

    def give(self, host: str) -> None:
        self.total -= 1
        left = self.by_peer.get(host, 1) - 1
        if left:
            self.by_peer[host] = left
        else:
            self.by_peer.pop(host, None)


def host_name(qname: dns.name.Name) -> str | None:
    """qname as a lower-case host name, or None when it is none (the root, a label
    with a dot, a space, a byte outside ASCII ...): such a name is never looked up."""
    labels = [label.lower() for label in qname.labels if label]
    if not labels or qname.is_wild():
        return None
    try:
        text = [label.decode("ascii") for label in labels]
    except UnicodeDecodeError:
        return None
    if not all(_LABEL.match(label) for label in text):
        return None
    return ".".join(text)


def _formerr(wire: bytes) -> bytes | None:
    """FORMERR for a query dnspython cannot parse: its id, no question. Nothing for
    what is not a query (too short for a header, or a response: never answer those,
    so two servers cannot bounce packets between them)."""
    if len(wire) < 12:
        return None
    qid, flags = _HEADER.unpack_from(wire)
    if flags & dns.flags.QR:
        return None
    opcode = (flags >> 11) & 0xF
    out_flags = dns.flags.QR | (opcode << 11) | (flags & dns.flags.RD) | dns.rcode.FORMERR
    return _HEADER.pack(qid, out_flags) + bytes(8)


async def reply(wire: bytes, peer: Peer, answerer: Answerer, limit: int
                ) -> bytes | None:
    """The reply to one query message (at most `limit` bytes over UDP: larger ones
    are truncated with TC set; 0 for TCP's 65535), or None to send nothing."""
    if len(wire) > MAX_QUERY:
        return _formerr(wire)
    try:
        query = dns.message.from_wire(wire)
    except Exception as exc:   # dnspython raises many kinds; none may stop the server
        log.debug("DNS %s: malformed query (%s: %s)", peer, type(exc).__name__, exc)
        return _formerr(wire)
    if query.flags & dns.flags.QR:
        return None
    try:
        response = dns.message.make_response(query, recursion_available=True,
                                             our_payload=MAX_UDP_REPLY)
    except Exception as exc:
        log.debug("DNS %s: no reply for this query (%s)", peer, exc)
        return _formerr(wire)
    if limit:   # over UDP: the client's EDNS payload, within ours; 512 without EDNS
        limit = max(PLAIN_UDP_REPLY, min(query.payload, limit)) if query.edns >= 0 \
            else PLAIN_UDP_REPLY
    if query.edns > 0:
        response.set_rcode(dns.rcode.BADVERS)
    elif query.opcode() != dns.opcode.QUERY:
        response.set_rcode(dns.rcode.NOTIMP)
    elif len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
    else:
        await _answer(query.question[0], response, peer, answerer)
    try:
        return response.to_wire(max_size=limit or 65535, prefer_truncation=True)
    except Exception as exc:
        log.warning("DNS %s: cannot encode the reply (%s)", peer, exc)
        return _formerr(wire)


async def _answer(asked: dns.rrset.RRset, response: dns.message.Message, peer: Peer,
                  answerer: Answerer) -> None:
    qtype = asked.rdtype
    if asked.rdclass != dns.rdataclass.IN or dns.rdatatype.is_metatype(qtype) \
            or qtype in (dns.rdatatype.ANY, dns.rdatatype.AXFR, dns.rdatatype.IXFR):
        response.set_rcode(dns.rcode.NOTIMP)
        return
    name = host_name(asked.name)
    if name is None:
        log.info("DNS %s: %r is not a host name: NXDOMAIN", peer,
                 asked.name.to_text()[:80])
        response.set_rcode(dns.rcode.NXDOMAIN)
        return
    try:
        got = await asyncio.wait_for(answerer.answer(Question(name, qtype), peer),
                                     ANSWER_TIMEOUT)
    except asyncio.TimeoutError:
        log.warning("DNS %s: no answer for %s within %.0f s: SERVFAIL", peer, name,
                    ANSWER_TIMEOUT)
        response.set_rcode(dns.rcode.SERVFAIL)
        return
    except Exception:
        log.exception("DNS %s: answering %s failed: SERVFAIL", peer, name)
        response.set_rcode(dns.rcode.SERVFAIL)
        return
    response.set_rcode(dns.rcode.Rcode.make(got.rcode))
    version = address_version(qtype)
    addresses = [str(a) for a in got.addresses if a.version == version]
    if got.rcode == dns.rcode.NOERROR and addresses:
        # the owner is the question's name as asked: its case is echoed
        response.answer.append(dns.rrset.from_text_list(
            asked.name, max(0, got.ttl), dns.rdataclass.IN, qtype, addresses))


def _own(sock: socket.socket) -> socket.socket:
    """A descriptor of our own for sock, which is closed now: the event loop watches
    descriptors by number, and the daemon closes a namespace's sockets as its
    launcher ends, before the serving task's cancellation has run; the next
    namespace's sockets then get the same numbers, and the old registration would
    leave them unserved. Ours is closed only after the loop has let it go."""
    own = sock.dup()
    sock.close()
    own.setblocking(False)
    return own


# ----- UDP -------------------------------------------------------------------------
def _want_pktinfo(sock: socket.socket) -> None:
    """Ask for each datagram's destination address, so the reply leaves from the
    address the query was (redirected) to, even on a socket bound to a wildcard."""
    options = [(socket.IPPROTO_IP, IP_PKTINFO)]
    if sock.family == socket.AF_INET6:
        options.append((socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO))
    for level, option in options:
        with contextlib.suppress(OSError):
            sock.setsockopt(level, option, 1)


def _reply_pktinfo(ancdata: list[tuple[int, int, bytes]]
                   ) -> list[tuple[int, int, bytes]]:
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO \
                and len(data) >= _PKTINFO4.size:
            _ifindex, _spec, dst = _PKTINFO4.unpack_from(data)
            return [(level, kind, _PKTINFO4.pack(0, dst, bytes(4)))]
        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO \
                and len(data) >= _PKTINFO6.size:
            return [(level, kind, data[:_PKTINFO6.size])]
    return []


async def serve_udp(sock: socket.socket, answerer: Answerer) -> None:
    """Answer the queries that arrive on sock (bound, UDP) until cancelled. Queries
    beyond the limits in flight are dropped (the client retries). sock is taken over
    (see _own)."""
    loop = asyncio.get_running_loop()
    sock = _own(sock)
    _want_pktinfo(sock)
    limits = _Limits()
    tasks: set[asyncio.Task[None]] = set()
    space = socket.CMSG_SPACE(max(_PKTINFO4.size, _PKTINFO6.size))

    async def one(wire: bytes, peer: Peer, addr: tuple[object, ...],
                  ancdata: list[tuple[int, int, bytes]]) -> None:
        try:
            out = await reply(wire, peer, answerer, MAX_UDP_REPLY)
        finally:
            limits.give(peer.host)
        if out is None:
            return
        pktinfo = _reply_pktinfo(ancdata)
        try:
            sock.sendmsg([out], pktinfo, 0, addr)
        except OSError as exc:
            if not pktinfo:
                log.debug("DNS %s: reply not sent (%s)", peer, exc)
                return
            with contextlib.suppress(OSError):   # no source address: the default one
                sock.sendto(out, addr)

    def readable() -> None:
        for _ in range(64):   # a burst at a time: other work goes on between bursts
            try:
                wire, ancdata, _flags, addr = sock.recvmsg(MAX_QUERY + 1, space)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:   # e.g. ICMP errors reported on the socket
                log.debug("DNS udp: receive: %s", exc)
                continue
            peer = Peer(str(addr[0]), int(addr[1]), "udp")
            if not limits.take(peer.host):
                log.debug("DNS %s: too many queries in flight: dropped", peer)
                continue
            task = loop.create_task(one(wire, peer, addr, ancdata))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    loop.add_reader(sock.fileno(), readable)
    try:
        await loop.create_future()
    finally:
        loop.remove_reader(sock.fileno())
        for task in list(tasks):
            task.cancel()
        sock.close()


# ----- TCP -------------------------------------------------------------------------
async def serve_tcp(listener: socket.socket, answerer: Answerer) -> None:
    """Answer DNS over the connections accepted on listener (bound; listen() is called
    here if it was not) until cancelled; then its connections close. listener is
    taken over (see _own)."""
    listener = _own(listener)
    listener.listen(64)
    limits = _Limits()
    conns: dict[str, int] = {}
    writers: set[asyncio.StreamWriter] = set()

    async def connection(reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        name = writer.get_extra_info("peername")
        peer = Peer(str(name[0]), int(name[1]), "tcp") if name else Peer("?", 0, "tcp")
        if conns.get(peer.host, 0) >= TCP_PER_PEER:
            log.debug("DNS %s: too many connections: closed", peer)
            writer.close()
            return
        conns[peer.host] = conns.get(peer.host, 0) + 1
        writers.add(writer)
        try:
            await _queries(reader, writer, peer, answerer, limits)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            writers.discard(writer)
            conns[peer.host] -= 1
            if not conns[peer.host]:
                del conns[peer.host]
            writer.close()

    server = await asyncio.start_server(connection, sock=listener)
    try:
        await server.serve_forever()
    finally:
        server.close()
        for writer in list(writers):
            writer.close()


async def _queries(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   peer: Peer, answerer: Answerer, limits: _Limits) -> None:
    """One TCP connection: length-prefixed queries, answered as each is ready (each
    reply is written whole), up to the limits in flight; ends on EOF, a bad length, an
    idle timeout or a slow reader."""
    pending: set[asyncio.Task[None]] = set()

    async def one(wire: bytes) -> None:
        try:
            out = await reply(wire, peer, answerer, 0)
        finally:
            limits.give(peer.host)
        if out is None or writer.is_closing():
            return
        writer.write(struct.pack("!H", len(out)) + out)
        try:
            await asyncio.wait_for(writer.drain(), TCP_IDLE)
        except (OSError, asyncio.TimeoutError):   # gone, or not reading: stop
            writer.close()

    try:
        while True:
            head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
            size = struct.unpack("!H", head)[0]
            if size < 12 or size > MAX_QUERY:
                log.debug("DNS %s: a %d-byte message: connection closed", peer, size)
                return
            wire = await asyncio.wait_for(reader.readexactly(size), TCP_IDLE)
            while not limits.take(peer.host):   # back-pressure: read no more for now
                if not pending:
                    return
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.ensure_future(one(wire))
            pending.add(task)
            task.add_done_callback(pending.discard)
    except asyncio.TimeoutError:
        pass
    finally:
        if pending:
            await asyncio.wait(pending, timeout=ANSWER_TIMEOUT + TCP_IDLE)
            for task in pending:
                task.cancel()

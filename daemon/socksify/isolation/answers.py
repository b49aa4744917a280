"""The daemon's answers to an isolated program's DNS questions: the same decision as
the shim's RESOLVE (Router.lookup), given as DNS.

- a name the policy proxies (a chain that resolves remotely): the user's stand-in
  address of the asked family (A: IPv4, AAAA: IPv6), which the router maps back to
  the name when the program connects to it;
- a name it sends direct, or through a chain with dns = "local", or one the hosts file
  defines: its real addresses, resolved by the daemon itself (getaddrinfo, as the
  daemon resolves a direct target);
- "localhost": 127.0.0.1 / ::1, asking no one (as the shim resolves it locally);
- a blocked name: NXDOMAIN. Not REFUSED: a stub resolver takes REFUSED as "this
  server will not serve me" and tries the next nameserver or retries (Go reports
  "server misbehaving"); NXDOMAIN ends the lookup at once with "no such host", and the
  daemon's log and the socksify command say why. Its search-list variants come here
  too and are decided the same way.
- no policy for the session (its socksify command ended): REFUSED; no stand-in free
  ([dns] max_names): SERVFAIL, "try later", as the shim's EAI_AGAIN.
Other data types (MX, TXT, HTTPS, ...) get the verdict without records: NOERROR (no
data) or the error above; no address is reserved and nothing is resolved for them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import socket
from typing import Awaitable, Callable

import dns.rcode
import dns.rdatatype

from ..core.router import Router
from ..procinfo import AppInfo
from .nameserver import Answer, IPAddress, Peer, Question, address_version

log = logging.getLogger("socksify.daemon")

DIRECT_TTL = 30          # seconds: real answers (getaddrinfo gives no TTL)
STANDIN_TTL = 60         # seconds, and at most half the table's [dns] min_age
RESOLVE_TIMEOUT = 6.0    # seconds for the daemon's own lookup of a direct name
LOCALHOST = (ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1"))

Resolver = Callable[[str], Awaitable[list[IPAddress]]]
_ids = itertools.count(1)


class NameNotFound(Exception):
    """The daemon's resolver says the name does not exist."""


async def resolve_here(name: str) -> list[IPAddress]:
    """name's addresses by the daemon's own resolver, both families, in its order.
    Raises NameNotFound when the name does not exist, OSError when the lookup fails."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            name, None, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", None),
                         getattr(socket, "EAI_ADDRFAMILY", None)):
            raise NameNotFound(str(exc)) from None
        raise
    out: list[IPAddress] = []
    for *_, sockaddr in infos:
        addr = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if addr not in out:
            out.append(addr)
    return out


class PolicyAnswerer:
    """The Answerer for one isolated program: its session (whose policy decides), its
    user (whose stand-in table answers) and who it is (`app`, for per-app rules: the
    program behind a query's peer address, or the isolated command itself)."""

    def __init__(self, router: Router, session: bytes, uid: int,
                 app: Callable[[Peer], Awaitable[AppInfo]],
                 resolve: Resolver = resolve_here
                 ) -> None:
        self.router = router
        self.session = session
        self.uid = uid
        self.app = app
        self.resolve = resolve

    async def answer(self, question: Question, peer: Peer) -> Answer:
        qid = f"d{next(_ids)}"
        app = await self.app(peer)
        qtype = dns.rdatatype.to_text(dns.rdatatype.RdataType.make(question.qtype))
        answer, decision = await self._answer(question, app)
        shown = ", ".join(str(a) for a in answer.addresses
                          if a.version == address_version(question.qtype)) or "no records"
        code = dns.rcode.to_text(dns.rcode.Rcode.make(answer.rcode))
        log.info("[%s] %s DNS %s %s: %s -> %s %s", qid, app, qtype, question.name,
                 decision, code, shown)
        return answer

    async def _answer(self, question: Question, app: AppInfo) -> tuple[Answer, str]:
        name = question.name
        version = address_version(question.qtype)
        if name == "localhost":
            return Answer(addresses=LOCALHOST, ttl=DIRECT_TTL), "localhost"
        found = self.router.lookup(app, name, self.session, self.uid, version)
        rule = f" [{found.rule}]" if found.rule else ""
        if found.verdict == "stand-in":
            ttl = int(min(STANDIN_TTL, self.router.fake.min_age // 2))
            addrs = (found.addr,) if found.addr is not None else ()
            return Answer(addresses=addrs, ttl=ttl), "stand-in" + rule
        if found.verdict == "blocked":
            return Answer(dns.rcode.NXDOMAIN), f"blocked ({found.why}){rule}"
        if found.verdict == "refused":
            return Answer(dns.rcode.REFUSED), f"refused ({found.why})"
        if found.verdict == "busy":
            return Answer(dns.rcode.SERVFAIL), f"no stand-in free{rule}"
        if version is None:   # local, but no addresses asked for: nothing to resolve
            return Answer(), "direct" + rule
        try:
            real = await asyncio.wait_for(self.resolve(name), RESOLVE_TIMEOUT)
        except NameNotFound:
            return Answer(dns.rcode.NXDOMAIN), f"direct, not found here{rule}"
        except (OSError, asyncio.TimeoutError) as exc:
            return Answer(dns.rcode.SERVFAIL), f"direct, lookup failed ({exc}){rule}"
        return Answer(addresses=tuple(real), ttl=DIRECT_TTL), "direct" + rule

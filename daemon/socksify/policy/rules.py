"""The policy's rules and what they decide: an action (direct, block or a chain), a
rule (who and where it matches), and the decisions the router reads. No I/O."""

from __future__ import annotations

import fnmatch
import ipaddress
import sys
from dataclasses import dataclass
from typing import Sequence

from ..chains.spec import ChainSpec
from ..procinfo import AppInfo

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Action:
    kind: str                      # "chain" | "direct" | "block"
    chain: ChainSpec | None = None
    dns: str = "remote"            # for chains: how names are resolved (DNS_MODES)

    def __str__(self) -> str:
        return f"chain:{self.chain.name}" if self.chain else self.kind


@dataclass(frozen=True)
class Rule:
    label: str                      # "rule 2 (line 14)" or its name
    line: int | None
    action: Action
    apps: tuple[str, ...] = ()
    comms: tuple[str, ...] = ()     # self-reported process names (spoofable)
    users: tuple[str | int, ...] = ()
    parents: tuple[str, ...] = ()
    networks: tuple[Network, ...] = ()
    hosts: tuple[str, ...] = ()
    ports: tuple[tuple[int, int], ...] = ()
    udp: str = ""                   # "direct" | "refuse" | "chain"; "" = as the action
    #                                 implies (chain: carried through the chain's hops)

    @property
    def needs_app(self) -> bool:
        return bool(self.apps or self.comms or self.users or self.parents)

    def matches_app(self, app: AppInfo | None) -> bool:
        if not self.needs_app:
            return True
        if app is None:
            return False
        if self.apps and not any(_app_match(p, app.name, app.exe) for p in self.apps):
            return False
        if self.comms and not any(_comm_match(p, app.name) for p in self.comms):
            return False
        if self.users and not any(u in (app.uid, app.user) for u in self.users):
            return False
        return not self.parents or any(_app_match(p, name, exe) for p in self.parents
                                       for name, exe in app.ancestors)

    def may_match_name(self, app: AppInfo | None, name: str) -> bool:
        """Could a connection to `name` (port not known yet) match this rule?"""
        if not self.matches_app(app):
            return False
        if self.networks or self.hosts:
            return any(fnmatch.fnmatch(name, h) for h in self.hosts)
        return True

    def may_match_address(self, app: AppInfo | None, addr: IPAddress) -> bool:
        """Could a connection to `addr` (port not known: a reverse lookup) match this
        rule?"""
        if not self.matches_app(app):
            return False
        if self.networks or self.hosts:
            return any(_in_network(addr, n) for n in self.networks)
        return True

    def matches(self, app: AppInfo | None, addr: IPAddress | None, port: int,
                host: str | None = None) -> bool:
        """addr is None when only a host name is known (a SOCKS front-door request)."""
        if not self.matches_app(app):
            return False
        if self.networks or self.hosts:
            by_ip = addr is not None and any(_in_network(addr, n) for n in self.networks)
            by_name = host is not None and any(
                fnmatch.fnmatch(host.lower(), h) for h in self.hosts)
            if not (by_ip or by_name):
                return False
        if self.ports and not any(lo <= port <= hi for lo, hi in self.ports):
            return False
        return True

    def covers(self, other: Rule) -> bool:
        """True if every connection `other` matches is matched by self (a conservative
        test: False when unsure), so `other` after self can never match."""
        def sub(mine: Sequence[object], theirs: Sequence[object]) -> bool:
            return not mine or (bool(theirs) and set(theirs) <= set(mine))
        if not (sub(self.apps, other.apps) and sub(self.comms, other.comms)
                and sub(self.users, other.users)
                and sub(self.parents, other.parents) and sub(self.hosts, other.hosts)):
            return False
        if self.networks or self.hosts:
            if other.hosts and not self.hosts:
                return False
            if not other.networks and not other.hosts:
                return False
            if not all(any(_subnet(n, m) for m in self.networks) for n in other.networks):
                return False
        if self.ports:
            if not other.ports:
                return False
            if not all(any(a <= lo and hi <= b for a, b in self.ports)
                       for lo, hi in other.ports):
                return False
        return True


@dataclass(frozen=True)
class Decision:
    action: Action
    rule: str                       # the label of the rule that matched, or "default"
    udp: str = ""                   # the rule's udp key, if it has one

    @property
    def udp_direct(self) -> bool:
        """May a datagram to this destination go out directly? For a direct rule,
        yes unless it says udp = "refuse"; for a chain, only if it says udp = "direct"
        (udp = "chain" carries it through the chain instead); for a block, never."""
        if self.action.kind == "direct":
            return self.udp != "refuse"
        return self.action.kind == "chain" and self.udp == "direct"


@dataclass(frozen=True)
class NameDecision:
    verdict: str                    # "remote" (fake address) | "local" | "block"
    rule: str
    why: str = ""                   # for a block: the reason, for logs and -v


NO_NAMES = ("chain {chain} cannot carry host names (its last hop speaks SOCKS4): use "
             "a socks4a:// or socks5:// last hop, or dns = \"local\" to resolve here")


def _app_match(pattern: str, name: str, exe: str,
               windows: bool = sys.platform == "win32") -> bool:
    """app and parent: the executable's path (a pattern with '/') or base name. On
    Linux the name a process reports (comm, argv[0]) is never consulted: any program
    can set it. On Windows the image name from the process list counts too (it is the
    executable file's name, not the program's say)."""
    if windows:
        pattern, name, exe = _windows_form(pattern), _windows_form(name), \
            _windows_form(exe)
    if "/" in pattern:
        return bool(exe) and fnmatch.fnmatchcase(exe, pattern)
    base = exe.rsplit("/", 1)[-1] if exe else ""
    return (windows and fnmatch.fnmatchcase(name, pattern)) or (
        bool(base) and fnmatch.fnmatchcase(base, pattern))


def _comm_match(pattern: str, name: str,
                windows: bool = sys.platform == "win32") -> bool:
    """comm: the name the process reports for itself."""
    if windows:
        pattern, name = _windows_form(pattern), _windows_form(name)
    return fnmatch.fnmatchcase(name, pattern)


def _windows_form(text: str) -> str:
    """Windows names compare as Windows does: case-insensitively, either slash, and
    with or without ".exe" (`apps = ["curl"]` matches curl.exe)."""
    text = text.replace("\\", "/").lower()
    return text[:-4] if text.endswith(".exe") else text


def _in_network(addr: IPAddress, net: Network) -> bool:
    if addr.version != net.version:
        mapped = getattr(addr, "ipv4_mapped", None)
        return mapped is not None and mapped in net
    return addr in net


def _subnet(inner: Network, outer: Network) -> bool:
    return inner.version == outer.version and inner.subnet_of(outer)  # type: ignore[arg-type]

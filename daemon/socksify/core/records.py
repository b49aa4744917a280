"""The plain records the core passes around: a `socksify` command's session and one
connection, from its decision to its end."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from ..chains import Selector
from ..dns import StandIn
from ..policy import Policy
from ..procinfo import AppInfo
from ..protocol import control as wire
from .carry import Counters


@dataclass
class Session:
    id: bytes
    policy: Policy | None          # None: whatever the daemon's policy is right now
    writer: asyncio.StreamWriter   # the socksify command's control connection
    verbose: bool                  # send it one event line per connection
    owner: int                     # pid of the socksify command
    uid: int                       # its user: only that user's programs may use it
    selectors: dict[str, Selector] = field(default_factory=dict)
    isolated: bool = False         # socksify --isolate: the program has no way out but
    #                                the relay, so "direct" is carried by the daemon too
    quiet: bool = False            # socksify -q: it prints no event line, so none is sent


@dataclass
class Connection:
    id: str
    app: AppInfo
    dst: wire.IPAddress | None     # None: only a host name is known (front door)
    port: int
    started: float
    host: str | None = None        # the name behind a stand-in address, or asked for
    rule: str = ""                 # label of the rule that decided
    chain: str = ""                # chain name, for chain actions
    route: str = ""                # the hops actually used
    counters: Counters = field(default_factory=Counters)
    session: Session | None = None
    stand_in: StandIn | None = None  # the stand-in address it was made to, if any
    # how its bytes go: relay | handoff | prebuilt | frontdoor | isolated (| direct)
    path: str = "relay"
    state: str = ""                # handed off: the kernel's TCP state of its socket
    hops: tuple[str, ...] = ()     # "host:port" of each hop used, in order
    # its log line, held until the program has its answer (Router.connect's `after`)
    log_later: list[Callable[[], None]] | None = field(default=None, repr=False,
                                                       compare=False)

    @property
    def target(self) -> str:
        """The destination as the program named it: the host name when there is one."""
        if self.host or self.dst is None:
            return f"{self.host}:{self.port}"
        return endpoint(self.dst, self.port)

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "app": self.app.name, "pid": self.app.pid,
                "user": self.app.user, "uid": self.app.uid,
                "target": endpoint(self.dst, self.port) if self.dst else self.target,
                "host": self.host, "rule": self.rule, "chain": self.chain,
                "route": self.route, "up": self.counters.up,
                "down": self.counters.down,
                "age": round(time.monotonic() - self.started, 1),
                "path": self.path, "state": self.state or self.counters.state,
                "hops": list(self.hops)}


@dataclass(frozen=True)
class Lookup:
    """How a name lookup is answered (Router.lookup): its verdict, the deciding rule,
    why (for a refusal) and, for a stand-in, the address."""
    verdict: str                   # "local" | "stand-in" | "blocked" | "refused" | "busy"
    rule: str
    why: str = ""
    addr: wire.IPAddress | None = None


@dataclass
class UdpFlow(Connection):
    """A UDP association (the front door's UDP ASSOCIATE): `counters` are payload
    bytes each way, these the datagrams; its destinations vary, the first is shown."""

    datagrams_up: int = 0
    datagrams_down: int = 0
    dropped: int = 0               # fragments, malformed, foreign, refused by policy

    def went_up(self, size: int) -> None:
        """A datagram of size payload bytes sent on to the chain."""
        self.datagrams_up += 1
        self.counters.up += size

    def came_down(self, size: int) -> None:
        """A reply of size payload bytes given to the program."""
        self.datagrams_down += 1
        self.counters.down += size

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        if self.dst is None and self.host is None:
            out["target"] = "-"                 # no datagram yet
        out.update({"kind": "udp", "datagrams_up": self.datagrams_up,
                    "datagrams_down": self.datagrams_down, "dropped": self.dropped})
        if self.path == "handoff":     # the program's socket sends: the daemon sees none
            out.update({key: None for key in ("up", "down", "datagrams_up",
                                              "datagrams_down", "dropped")})
        return out


def endpoint(addr: wire.IPAddress, port: int) -> str:
    return f"[{addr}]:{port}" if addr.version == 6 else f"{addr}:{port}"

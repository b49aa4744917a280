"""A chain as the lane builds it (lane/lane.c, the daemon's compiled connect path):
the bytes of every hop's request, written at once, and the kind of each reply to
read, in order. Only for a chain the lane builds exactly as the chain engine would
(chains/hops.py, chains/steps.py), from the same encoders: strict, pipelined, of
SOCKS4/4a hops and SOCKS5 hops without credentials, none of them known to mishandle
early data. For a chain with pre-built tunnels (chains/pool.py), the plan finishes a
tunnel that already reaches the last hop: that hop's request only. For anything else
there is no plan, and the engine builds every connect."""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol import socks4, socks5
from ..proxies import Proxy
from .earlydata import EarlyData
from .spec import ChainSpec, Strategy

# the kinds of reply (lane/lane.h LANE_REPLY_*)
REPLY_SOCKS4 = 1             # 8 bytes
REPLY_SOCKS5_METHOD = 2      # the greeting's reply, 2 bytes
REPLY_SOCKS5 = 3             # a CONNECT reply, 10 bytes or more
MAX_REPLIES = 16             # LANE_MAX_REPLIES
MAX_REQUESTS = 1024          # LANE_MAX_REQUESTS


@dataclass(frozen=True)
class LanePlan:
    requests: bytes          # every hop's request, in order
    replies: bytes           # the kind of each reply, in order
    timeout: float           # seconds for the whole negotiation


def plan(spec: ChainSpec, route: tuple[Proxy, ...], host: str, port: int,
         early: EarlyData, prebuilt: bool = False) -> LanePlan | None:
    """The lane's plan for host:port (a numeric address) through route, or None if
    the lane cannot build this chain as the engine would. With prebuilt, the plan
    for a pre-built tunnel of spec's pool: the last hop's request."""
    if not _alike(spec, route, early, prebuilt):
        return None
    return _requests(spec, route, len(route) - 1 if prebuilt else 0, len(route), host,
                     port)


def tunnel_plan(spec: ChainSpec, early: EarlyData) -> LanePlan | None:
    """The lane's plan for one of the pre-built tunnels of spec's pool (chains/pool.py,
    which the engine builds with open_chain(route, n - 1)): hop 1 up to the last hop,
    each asked for the next, so that the tunnel waits at the last hop."""
    route = spec.hops
    if not _alike(spec, route, early, True):
        return None
    return _requests(spec, route, 0, len(route) - 1, "", 0)


def _alike(spec: ChainSpec, route: tuple[Proxy, ...], early: EarlyData,
           prebuilt: bool) -> bool:
    """Would the engine build route for spec as the lane does?"""
    return spec.strategy is Strategy.STRICT and route == spec.hops and spec.pipeline \
        and bool(spec.prebuilt) == prebuilt and spec.isolate == "none" \
        and spec.data_path == "handoff" \
        and not any(hop.tls or early.stepwise(hop) for hop in route)


def _requests(spec: ChainSpec, route: tuple[Proxy, ...], first: int, end: int,
              host: str, port: int) -> LanePlan | None:
    """The plan for route[first:end], each hop asked for the next (the last of all
    for host:port); None where a hop or an address is not the lane's."""
    requests: list[bytes] = []
    replies: list[int] = []
    for i in range(first, end):
        hop = route[i]
        ask_host, ask_port = ((route[i + 1].host, route[i + 1].port)
                              if i + 1 < len(route) else (host, port))
        try:
            if hop.protocol == "socks4":
                requests.append(socks4.connect_request(ask_host, ask_port, hop.user))
                replies.append(REPLY_SOCKS4)
            elif hop.protocol == "socks5" and not hop.user:
                requests.append(socks5.Greeting((socks5.METHOD_NO_AUTH,)).dumps())
                requests.append(socks5.ConnectRequest(ask_host, ask_port).dumps())
                replies += (REPLY_SOCKS5_METHOD, REPLY_SOCKS5)
            else:
                return None
        except ValueError:           # an address this hop cannot be asked for
            return None
    data = b"".join(requests)
    if len(replies) > MAX_REPLIES or len(data) > MAX_REQUESTS:
        return None
    return LanePlan(data, bytes(replies),
                    spec.connect_timeout + spec.read_timeout * max(1, end - first))

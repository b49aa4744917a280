"""The chain engine, from the bottom up: spec (what a chain is), health (which hops
are down), connect (dialling hop 1), hops (the SOCKS request to each hop), pool
(tunnels pre-built up to the last hop) and route (the route to try, with retries;
it takes from the pool, never the other way round). The names below are what the
rest of the daemon uses."""

from .connect import HandoffImpossible
from .health import HopHealth
from .pool import TunnelPool
from .route import (Handed, Selector, Tunnel, hand_direct, hand_tunnel, open_direct,
                    open_tunnel)
from .spec import ChainSpec, Strategy

__all__ = ["ChainSpec", "Handed", "HandoffImpossible", "HopHealth", "Selector",
           "Strategy", "Tunnel", "TunnelPool", "hand_direct", "hand_tunnel",
           "open_direct", "open_tunnel"]

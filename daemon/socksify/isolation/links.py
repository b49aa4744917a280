"""The isolated namespace's links and routes. Besides `lo`, a veth pair whose both
ends stay in the namespace (it leads nowhere) carries a default route for IPv4 and
IPv6, so that connect() to any address gets past routing and reaches the nat output
hook, where ruleset.py redirects it. A packet the rules let out on the veth would only
arrive at its other end, in the same namespace; the rules let none out anyway."""

from __future__ import annotations

from . import tools
from .namespace import IsolationUnavailable

OUTER, INNER = "socksify0", "socksify1"
# documentation addresses (RFC 5737, RFC 3849): nothing real has them
ADDR4, ADDR6 = "192.0.2.1/32", "2001:db8::1/128"


def set_up(unprivileged: bool) -> bool:
    """Create the pair and the routes; returns whether IPv6 has its route (without
    it an IPv6 connect() fails with ENETUNREACH, which is closed too)."""
    tools.run("ip", ["-batch", "-"], "\n".join([
        f"link add {OUTER} type veth peer name {INNER}",
        f"link set {INNER} up",
        f"link set {OUTER} up",
        f"addr add {ADDR4} dev {OUTER}",
        f"route add default dev {OUTER}",
    ]) + "\n", unprivileged)
    try:
        tools.run("ip", ["-6", "-batch", "-"], "\n".join([
            f"addr add {ADDR6} dev {OUTER} nodad",
            f"route add default dev {OUTER}",
        ]) + "\n", unprivileged)
    except IsolationUnavailable:
        return False     # IPv6 disabled here
    return True

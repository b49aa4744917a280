"""The launcher's side of the isolation path (`socksify` for a static, Go or raw-
syscall program, or with --isolate): enter the namespaces, give them a route that
leads nowhere and the rules whose only way out is the daemon, and hand the daemon
the sockets it serves. Call before starting any thread."""

from __future__ import annotations

from typing import Any

from .. import client
from ..paths import Paths
from ..printable import printable
from . import conntrack, links, namespace, ruleset, tools
from .handover import Bridge
from .namespace import IsolationUnavailable

__all__ = ["IsolationUnavailable", "hand_over", "isolate", "relay_info"]


def relay_info(paths: Paths) -> tuple[str, int, int, bool]:
    """The daemon's relay socket and ports, from its status, and whether it carries
    the namespace's UDP (a rule of the caller's policy says udp = "chain")."""
    try:
        status: dict[str, Any] = client.request(paths, {"op": "status"})
    except (client.DaemonUnavailable, client.UnsafeDaemon, OSError,
            ValueError) as exc:
        raise IsolationUnavailable(f"cannot ask the daemon for its relay: {exc}") \
            from None
    relay = status.get("relay")
    if not isinstance(relay, dict) or not relay.get("socket") \
            or not relay.get("port4"):
        raise IsolationUnavailable(
            f"the running socksifyd (version {printable(status.get('version', '?'))})"
            " has no relay socket for the isolation path; restart it (socksifyd "
            "restart)")
    return str(relay["socket"]), int(relay["port4"]), int(relay.get("port6") or 0), \
        relay.get("udp") is True


def isolate(paths: Paths, session: str) -> Bridge:
    """Enter the isolated namespaces, set up their route and rules, and hand the
    sockets to the daemon; the Bridge re-hands them after a daemon restart."""
    relay_socket, port4, port6, udp = relay_info(paths)
    for tool in ("ip", "nft"):
        tools.find(tool)          # before anything changes: name the missing package
    flags = namespace.enter()
    unprivileged = bool(flags & namespace.CLONE_NEWUSER)
    links.set_up(unprivileged)
    bridge = Bridge(session, udp and _conntrack_works())
    bridge.bind_ports((port4, port6))
    ruleset.install(bridge.redirect_port, bridge.dns_port, unprivileged,
                    bridge.udp_port)
    hand_over(bridge, paths, (relay_socket, port4, port6))
    return bridge


def hand_over(bridge: Bridge, paths: Paths,
              relay: tuple[str, int, int] | None = None) -> None:
    """Pass the namespace's sockets to the (possibly new) daemon."""
    relay_socket, port4, port6 = relay or relay_info(paths)[:3]
    try:
        bridge.hand_over(relay_socket, port4, port6)
    except OSError as exc:
        raise IsolationUnavailable(f"cannot hand the isolated namespace's sockets to "
                                   f"the daemon ({relay_socket}): "
                                   f"{exc.strerror or exc}") from None


def _conntrack_works() -> bool:
    """Can this process ask the namespace's conntrack (nf_conntrack_netlink loaded, the
    capability here)? Without it UDP is not redirected: the fence drops it (EPERM)."""
    try:
        conntrack.open_socket().close()
    except OSError:
        return False
    return True

"""The isolated namespace's nftables rules: its only way out is the daemon.

    nat output (priority -100)     UDP and TCP to port 53, any address (127.0.0.53,
                                   the resolv.conf's server, 8.8.8.8, ::1 ...) ->
                                   the DNS sockets; then anything to an address of
                                   this namespace (loopback) is left alone; every
                                   other TCP connection -> the redirect listener;
                                   with a UDP carrier port, every other UDP
                                   datagram -> the carrier sockets (datagrams.py)
    filter output (priority 0)     only what leaves through `lo` passes (loopback),
                                   and what the nat rules redirected to 127.0.0.1 or
                                   ::1 (the hook still names the first route's
                                   device, the veth, for those); every other packet
                                   -- UDP, ICMP, SCTP, raw IP -- is dropped, which
                                   the sending call sees as EPERM

`redirect` rewrites a locally made connection to 127.0.0.1 (IPv4) or ::1 (IPv6) and
the given port; conntrack keeps the original destination, which the daemon reads with
SO_ORIGINAL_DST, and un-rewrites the replies, so the program sees its peer as the
address it connected to.

UDP is redirected the same way (when the daemon may carry it: a policy rule with
udp = "chain"): conntrack keeps each flow's original destination, which the daemon
asks for (conntrack.py), and un-rewrites the carrier's replies, so the program sees
the real remote as their source. Two flows from one program socket (one socket
sending to two destinations) would have the same reply tuple after the redirect; the
kernel's NAT then gives the second a new source port (seen on 6.18: each flow reaches
the carrier from its own port), so every flow stays one conntrack entry. Without a
UDP carrier port, the fence drops those datagrams (EPERM)."""

from __future__ import annotations

from . import tools

TABLE = "socksify"


def text(redirect_port: int, dns_port: int, udp_port: int = 0) -> str:
    """The ruleset: TCP to the redirect listeners on redirect_port (127.0.0.1 and
    ::1), port 53 to the DNS sockets on dns_port (UDP and TCP, both families), other
    UDP to the carrier sockets on udp_port (0: none, dropped)."""
    udp = f"\n        meta l4proto udp redirect to :{udp_port}" if udp_port else ""
    return f"""\
table inet {TABLE} {{
    chain divert {{
        type nat hook output priority -100; policy accept;
        udp dport 53 redirect to :{dns_port}
        tcp dport 53 redirect to :{dns_port}
        fib daddr type local accept
        meta l4proto tcp redirect to :{redirect_port}{udp}
    }}
    chain fence {{
        type filter hook output priority 0; policy drop;
        oifname "lo" accept
        ct status dnat ip daddr 127.0.0.1 accept
        ct status dnat ip6 daddr ::1 accept
    }}
}}
"""


def install(redirect_port: int, dns_port: int, unprivileged: bool,
            udp_port: int = 0) -> None:
    """Load the ruleset (atomically: all of it or none). IsolationUnavailable when
    nft is missing or the kernel refuses (no nf_tables, or none in user namespaces)."""
    tools.run("nft", ["-f", "-"], text(redirect_port, dns_port, udp_port), unprivileged)

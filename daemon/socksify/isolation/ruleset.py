"""The isolated namespace's nftables rules: its only way out is the daemon.

    nat output (priority -100)     UDP and TCP to port 53, any address (127.0.0.53,
                                   the resolv.conf's server, 8.8.8.8, ::1 ...) ->
                                   the DNS sockets; then anything to an address of
                                   this namespace (loopback) is left alone; every
                                   other TCP connection -> the redirect listener
    filter output (priority 0)     only what leaves through `lo` passes (loopback),
                                   and what the nat rules redirected to 127.0.0.1 or
                                   ::1 (the hook still names the first route's
                                   device, the veth, for those); every other packet
                                   -- UDP, ICMP, SCTP, raw IP -- is dropped, which
                                   the sending call sees as EPERM

`redirect` rewrites a locally made connection to 127.0.0.1 (IPv4) or ::1 (IPv6) and
the given port; conntrack keeps the original destination, which the daemon reads with
SO_ORIGINAL_DST, and un-rewrites the replies, so the program sees its peer as the
address it connected to."""

from __future__ import annotations

from . import tools

TABLE = "socksify"


def text(redirect_port: int, dns_port: int) -> str:
    """The ruleset: TCP to the redirect listeners on redirect_port (127.0.0.1 and
    ::1), port 53 to the DNS sockets on dns_port (UDP and TCP, both families)."""
    return f"""\
table inet {TABLE} {{
    chain divert {{
        type nat hook output priority -100; policy accept;
        udp dport 53 redirect to :{dns_port}
        tcp dport 53 redirect to :{dns_port}
        fib daddr type local accept
        meta l4proto tcp redirect to :{redirect_port}
    }}
    chain fence {{
        type filter hook output priority 0; policy drop;
        oifname "lo" accept
        ct status dnat ip daddr 127.0.0.1 accept
        ct status dnat ip6 daddr ::1 accept
    }}
}}
"""


def install(redirect_port: int, dns_port: int, unprivileged: bool) -> None:
    """Load the ruleset (atomically: all of it or none). IsolationUnavailable when
    nft is missing or the kernel refuses (no nf_tables, or none in user namespaces)."""
    tools.run("nft", ["-f", "-"], text(redirect_port, dns_port), unprivileged)

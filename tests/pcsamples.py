"""Three hand-written proxychains.conf files (besides Debian's own), used by the
converter's unit tests and by the lab test that routes each through proxychains4 and
through socksify. Addresses are filled in: HOST PORT pairs of SOCKS4 hops, a SOCKS5
hop, a dead hop."""

from __future__ import annotations


def samples(s4: list[tuple[str, int]], s5: tuple[str, int], dead: tuple[str, int]
            ) -> dict[str, str]:
    (h1, p1), (h2, p2), (h3, p3) = s4[:3]
    return {
        # strict, every option proxychains has, a SOCKS5 hop with credentials last
        "strict": f"""\
# hand-written: strict chain of three
strict_chain
quiet_mode
proxy_dns
remote_dns_subnet 224
tcp_read_time_out 12000
tcp_connect_time_out 6000
chain_len = 3
localnet 10.77.9.0/255.255.255.0
localnet 10.77.8.0:8080/255.255.255.0
localnet ::1/128
dnat 10.77.7.1:80 10.77.7.2:8080
socks_magic on

[ProxyList]
socks4 {h1} {p1}
socks4 {h2} {p2} someuser
socks5 {s5[0]} {s5[1]} alice s3cr#t=x
""",
        # dynamic: the dead hop is skipped, the others used in order; local DNS
        "dynamic": f"""\
dynamic_chain
tcp_connect_time_out 3000
[ProxyList]
socks4  {dead[0]}  {dead[1]}
socks4\t{h1}\t{p1}
socks4  {h3}  {p3}
""",
        # random: one hop of three at random
        "random": f"""\
random_chain
chain_len = 1
proxy_dns
[ProxyList]
socks4 {h1} {p1}
socks4 {h2} {p2}
socks4 {h3} {p3}
""",
    }

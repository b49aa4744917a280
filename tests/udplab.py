"""The UDP lab shared by the UDP tests (issue 19): danted SOCKS5 hops with UDP ASSOCIATE
(and one without) in the proxy zone, a UDP echo server and a DNS server (dnspython) in
the far zone that only the proxies reach, both recording each datagram's source, and
an nft witness counting UDP that leaves the client zone around the chain. Fixtures:
udp_hops, far, witness (import them into a test module to use them)."""

from __future__ import annotations

import itertools
import os
import re
import secrets
import socket
import subprocess
import textwrap
import threading
from pathlib import Path
from typing import Iterator

import dns.message
import dns.rrset
import pytest

import lab as lablib
from conftest import need

_ports = itertools.count(10830, 3)


def _udp_danted_conf(log: Path, port: int, ifaces: list[str], udp: bool) -> str:
    """danted 1.4 as a SOCKS5 hop with UDP: `udpassociate` in the rule that passes the
    client's request, and a second rule passing `udpreply` (the replies)."""
    ext = "".join(f"external: {i}\n" for i in ifaces)
    cmds = "connect udpassociate" if udp else "connect"
    return (f"logoutput: {log}\n"
            f"internal: 0.0.0.0 port = {port}\n{ext}"
            "external.rotation: route\n"
            "clientmethod: none\nsocksmethod: none\n"
            "user.privileged: root\nuser.unprivileged: nobody\n"
            "timeout.negotiate: 30\n"
            "client pass { from: 0.0.0.0/0 to: 0.0.0.0/0 }\n"
            f"socks pass {{ from: 0.0.0.0/0 to: 0.0.0.0/0 command: {cmds}\n"
            " log: connect disconnect error }\n"
            "socks pass { from: 0.0.0.0/0 to: 0.0.0.0/0 command: udpreply\n"
            " log: connect disconnect error }\n")


class UdpHops:
    """Three danted SOCKS5 hops with UDP (and one without) in the proxy zone, on ports
    of their own for this test; stopped afterwards."""

    def __init__(self, lab: lablib.Lab) -> None:
        self.lab = lab
        self.dir = lab.workdir / f"udphops-{secrets.token_hex(3)}"
        self.dir.mkdir()
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.ports: list[int] = []
        ifaces = ["lo", lab.tag + "pc", lab.tag + "pf"]
        base = next(_ports)
        for i in range(3):
            self.ports.append(self._spawn(base + i, ifaces, udp=True))
        self.no_udp_port = self._spawn(base + 3000, ifaces, udp=False)

    def _spawn(self, port: int, ifaces: list[str], udp: bool) -> int:
        conf = self.dir / f"d{port}.conf"
        conf.write_text(_udp_danted_conf(self.dir / f"d{port}.log", port, ifaces, udp))
        err = open(self.dir / f"d{port}.stderr", "ab")
        try:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.lab.proxy_ns, lablib.DANTED, "-f", str(conf),
                 "-p", str(self.dir / f"d{port}.pid")], stdin=subprocess.DEVNULL,
                stdout=err, stderr=err, env=lablib.clean_env(), start_new_session=True)
        finally:
            err.close()
        self.procs[port] = proc
        lablib.wait_until(lambda: lablib.try_connect(self.lab.client_ns,
                                                     lablib.PROXY_NEAR_IP, port) == 0,
                          20, f"danted on {port}")
        return port

    def url(self, i: int) -> str:
        return f"socks5://{lablib.PROXY_NEAR_IP}:{self.ports[i]}"

    def log(self, i: int) -> str:
        try:
            return (self.dir / f"d{self.ports[i]}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def kill(self, i: int) -> None:
        proc = self.procs.pop(self.ports[i])
        lablib.kill_group(proc)

    def close(self) -> None:
        for proc in self.procs.values():
            lablib.kill_group(proc)
        self.procs.clear()


class FarUdp:
    """In the far zone: a UDP echo server and a DNS server (dnspython) that answers
    FAR_NAME A; both record each datagram's source."""

    def __init__(self, lab: lablib.Lab) -> None:
        def bind() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((lablib.FAR_IP, 0))
            return s
        self.echo: socket.socket = lablib.in_netns(lab.far_ns, bind)  # type: ignore
        self.dns: socket.socket = lablib.in_netns(lab.far_ns, bind)  # type: ignore
        self.echo_port = self.echo.getsockname()[1]
        self.dns_port = self.dns.getsockname()[1]
        self.sources: list[tuple[str, int]] = []
        self.questions: list[str] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._echo, daemon=True),
                         threading.Thread(target=self._dns, daemon=True)]
        for t in self._threads:
            t.start()

    def _echo(self) -> None:
        while True:
            try:
                data, addr = self.echo.recvfrom(65536)
            except OSError:
                return
            if addr is None:          # shut down
                return
            with self._lock:
                self.sources.append(addr)
            self.echo.sendto(data, addr)

    def _dns(self) -> None:
        while True:
            try:
                data, addr = self.dns.recvfrom(65536)
            except OSError:
                return
            if addr is None:
                return
            query = dns.message.from_wire(data)
            answer = dns.message.make_response(query)
            name = query.question[0].name
            with self._lock:
                self.sources.append(addr)
                self.questions.append(name.to_text())
            if name.to_text() == lablib.FAR_NAME + ".":
                answer.answer.append(dns.rrset.from_text(name, 60, "IN", "A",
                                                         lablib.FAR_IP))
            self.dns.sendto(answer.to_wire(), addr)

    def seen(self) -> list[tuple[str, int]]:
        with self._lock:
            return list(self.sources)

    def close(self) -> None:
        for s in (self.echo, self.dns):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class Witness:
    """An nft counter in the client zone: UDP leaving by its veth for anything but hop
    1's address (the proxy zone's near side)."""

    def __init__(self, lab: lablib.Lab) -> None:
        self.lab = lab
        self.table = "skudp" + secrets.token_hex(3)
        rules = textwrap.dedent(f"""\
            table ip {self.table} {{
              chain out {{
                type filter hook output priority 0; policy accept;
                meta l4proto udp oifname != "lo" ip daddr != {lablib.PROXY_NEAR_IP} counter
              }}
            }}
            """)
        lab.client_run(["nft", "-f", "-"], input=rules.encode(), timeout=20, check=True)

    def packets(self) -> int:
        res = self.lab.client_run(["nft", "list", "table", "ip", self.table], timeout=20,
                                  check=True)
        m = re.search(r"counter packets (\d+)", res.stdout)
        assert m, res.stdout
        return int(m.group(1))

    def close(self) -> None:
        self.lab.client_run(["nft", "delete", "table", "ip", self.table], timeout=20)


@pytest.fixture
def udp_hops(lab: lablib.Lab) -> Iterator[UdpHops]:
    hops = UdpHops(lab)
    try:
        yield hops
    finally:
        hops.close()


@pytest.fixture
def far(lab: lablib.Lab) -> Iterator[FarUdp]:
    servers = FarUdp(lab)
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture
def witness(lab: lablib.Lab) -> Iterator[Witness]:
    need("nft")
    w = Witness(lab)
    try:
        yield w
    finally:
        w.close()


def cpu_seconds(pid: int | None) -> float:
    """user + system CPU time of a process, from /proc/PID/stat."""
    assert pid is not None
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

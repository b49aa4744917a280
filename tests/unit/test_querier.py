"""Which program sent a DNS query (isolation/served.py identify_querier, through
owners.py): a query's socket is found in the namespace's UDP table by the source
address and port it came from, also when it is bound to the wildcard address (an
unconnected socket, as a static program's own query uses). Here the "namespace" is
this test's own; the program is a child process holding such a socket."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import subprocess
import sys

from socksify.core.router import Router
from socksify.isolation import owners
from socksify.isolation.nameserver import Peer
from socksify.isolation.redirect import Namespace
from socksify.isolation.served import identify_querier
from socksify.protocol import control as wire

HOLDER = """\
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 0))
print(s.getsockname()[1], flush=True)
sys.stdin.read()
"""


def test_an_unconnected_udp_socket_is_found_by_its_port() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        port = s.getsockname()[1]
        inode = os.fstat(s.fileno()).st_ino
        local = (ipaddress.IPv4Address("127.0.0.1"), port)
        assert owners.socket_inode(os.getpid(), local, None, "udp") == inode
        # a TCP lookup, or one that wants a remote, does not take it
        assert owners.socket_inode(os.getpid(), local, None, "tcp") is None
        remote = (ipaddress.IPv4Address("127.0.0.1"), 53)
        assert owners.socket_inode(os.getpid(), local, remote, "udp") is None


def test_the_querying_program_is_identified() -> None:
    child = subprocess.Popen([sys.executable, "-c", HOLDER], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline())
        ns = Namespace(os.getpid(), os.getuid(), bytes(wire.SESSION_SIZE))
        found = asyncio.run(identify_querier(Router(), ns, Peer("127.0.0.1", port,
                                                                "udp")))
        assert found.pid == child.pid and found.uid == os.getuid()
        unseen = asyncio.run(identify_querier(Router(), ns, Peer("127.0.0.1", 1, "udp")))
        assert unseen.pid == 0 and "program not found" in unseen.name
    finally:
        child.kill()
        child.wait(10)

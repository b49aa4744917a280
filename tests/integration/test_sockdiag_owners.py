"""Another user's sockets, found by sockdiag: a real system user's process holds a TCP
connection to our listener and an unconnected UDP socket (bound to the wildcard
address) that sent us a datagram; the exact sock_diag lookup and the /proc/net reader
name that user's uid and the socket's inode, and so do the callers (socktable's
peer_uid, owners' socket_inode), while a root process's own sockets are root's."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import subprocess

import pytest

import users as userslib
from conftest import skip_or_fail
from socksify import sockdiag
from socksify.isolation import owners
from socksify.listeners import socktable

HOLDER = """\
import json, os, socket, sys
port = int(sys.argv[1])
tcp = socket.create_connection(("127.0.0.1", port))
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("0.0.0.0", 0))
udp.sendto(b"q", ("127.0.0.1", port))
print(json.dumps({"tcp": os.fstat(tcp.fileno()).st_ino,
                  "udp": os.fstat(udp.fileno()).st_ino}), flush=True)
sys.stdin.read()
"""


@pytest.mark.root("a fresh system user and setpriv")
def test_another_users_tcp_and_udp_sockets() -> None:
    if shutil.which("setpriv") is None or shutil.which("useradd") is None:
        skip_or_fail("needs setpriv and useradd (util-linux, passwd)")
    lst = socket.socket()
    rcv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with lst, rcv, userslib.system_users("d") as (user,):
        lst.bind(("127.0.0.1", 0))
        lst.listen()
        port = lst.getsockname()[1]
        rcv.bind(("127.0.0.1", port))      # the same port number, for UDP
        lst.settimeout(20)
        rcv.settimeout(20)
        proc = subprocess.Popen(
            ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}",
             "--clear-groups", userslib.SYSTEM_PY, "-c", HOLDER, str(port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None
            inodes = json.loads(proc.stdout.readline())
            acc, _ = lst.accept()
            with acc:
                _data, source = rcv.recvfrom(10)
                peer, ours = acc.getpeername(), acc.getsockname()
                tcp = sockdiag.Owner(user.pw_uid, inodes["tcp"])
                assert sockdiag.lookup(socket.IPPROTO_TCP, peer, ours) == tcp
                assert sockdiag.proc_lookup(socket.IPPROTO_TCP, peer, ours) == tcp
                assert socktable.peer_uid(peer, ours) == user.pw_uid
                # our own end of that connection is root's
                assert sockdiag.lookup(socket.IPPROTO_TCP, ours, peer) == \
                    sockdiag.Owner(0, os.fstat(acc.fileno()).st_ino)
                udp = sockdiag.Owner(user.pw_uid, inodes["udp"])
                here = ("127.0.0.1", port)
                assert sockdiag.lookup(socket.IPPROTO_UDP, source, here) == udp
                assert sockdiag.proc_lookup(socket.IPPROTO_UDP, source, None) == udp
                # on a netlink socket opened elsewhere (as the isolated namespace's is)
                with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM,
                                   sockdiag.NETLINK_SOCK_DIAG) as nl:
                    assert sockdiag.lookup(socket.IPPROTO_UDP, source, here, nl) == udp
                    assert sockdiag.lookup(socket.IPPROTO_TCP, peer, ours, nl) == tcp
                ip = ipaddress.ip_address(source[0])
                assert owners.socket_inode(proc.pid, (ip, source[1]), None, "udp") == \
                    inodes["udp"]
        finally:
            assert proc.stdin is not None
            proc.stdin.close()
            proc.wait(20)

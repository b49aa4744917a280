#!/usr/bin/env python3
"""A UDP client for the carried-datagram tests (tests/integration/test_udp_shim.py),
run under the shim: plain socket calls, as any program makes them. One JSON line on
stdout: {"ok": bool, ...} with what it saw.

  udpclient.py sendto HOST PORT        sendto/recvfrom: echo, the source reported
  udpclient.py connected HOST PORT     connect, send/recv, getpeername, read/write
  udpclient.py nonblock HOST PORT      non-blocking, select, EAGAIN when empty
  udpclient.py flood HOST PORT N SIZE  N datagrams of SIZE bytes, a window of 64:
                                       sent and received counted, order checked
  udpclient.py mixed HOST PORT         a carried socket also gets local datagrams:
                                       untouched, their own source, MSG_TRUNC
  udpclient.py six HOST PORT           an IPv6 socket to an IPv4 destination
  udpclient.py rtt HOST PORT N         N sequential echoes: the median round trip
  udpclient.py error HOST PORT         connected: a send, then recv must fail
  udpclient.py twice HOST PORT FILE    connected and not: an echo each, FILE.ready,
                                       then once FILE.go exists another echo each
  udpclient.py midflow HOST PORT FILE  connected: one echo, then FILE.ready is made;
                                       once FILE.go exists, a send and a recv that
                                       must fail
  udpclient.py vectored HOST PORT      connected: os.writev/os.readv (several
                                       buffers, a datagram cut short), mixed with
                                       send/recv; pwritev2/preadv2 at offset -1
  udpclient.py closing HOST PORT FILE HOW  connected: one echo, then FILE.ready holds
                                       {port, relay: the kernel's peer}; once FILE.go
                                       exists: HOW=close closes the socket, makes
                                       FILE.closed and lives on until FILE.end;
                                       HOW=exit exits without closing it
  udpclient.py many HOST PORT N        N sockets in a row: each an echo, then closed
  udpclient.py copies HOST PORT        copies of carried sockets (os.dup, os.dup2,
                                       dup3, socket(fileno=...)) send and receive;
                                       dup2 of a plain socket onto a copy: plain
"""

from __future__ import annotations

import errno
import json
import os
import select
import socket
import struct
import sys
import time


def out(**report: object) -> None:
    print(json.dumps(report), flush=True)


def sendto(host: str, port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    marker = os.urandom(24)
    where = socket.gethostbyname(host)      # a name: the stand-in the shim gets
    s.sendto(marker, (host, port))
    data, src = s.recvfrom(65536)
    # MSG_PEEK and MSG_TRUNC on a carried socket: as without socksify
    s.sendto(marker[::-1], (host, port))
    peeked, _ = s.recvfrom(8, socket.MSG_PEEK)
    full = s.recv(65536)
    s.sendto(marker, (host, port))
    n = s.recv_into(bytearray(4), 4, socket.MSG_TRUNC)
    out(ok=data == marker and src == (where, port) and peeked == marker[::-1][:8]
        and full == marker[::-1] and n == len(marker),
        source=list(src), echoed=data == marker, peek=peeked == marker[::-1][:8],
        full=full == marker[::-1], trunc=n)


def connected(host: str, port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    s.connect((host, port))
    peer = s.getpeername()
    s.send(b"hello")
    got = s.recv(100)
    os.write(s.fileno(), b"via write")
    select.select([s], [], [], 10)      # settimeout made the descriptor non-blocking
    back = os.read(s.fileno(), 100)
    s.sendmsg([b"via ", b"sendmsg"])
    msg, _, flags, src = s.recvmsg(100)
    out(ok=peer == (host, port) and got == b"hello" and back == b"via write"
        and msg == b"via sendmsg" and src == (host, port) and not flags & socket.MSG_TRUNC,
        peer=list(peer), got=got.decode(errors="replace"),
        back=back.decode(errors="replace"), msg=msg.decode(errors="replace"),
        source=list(src) if src else None)


def nonblock(host: str, port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    try:
        s.recvfrom(100)
        empty = "no EAGAIN"
    except BlockingIOError:
        empty = "EAGAIN"
    s.sendto(b"ping", (host, port))
    ready, _, _ = select.select([s], [], [], 10)
    data, src = s.recvfrom(100) if ready else (b"", None)
    try:
        s.recvfrom(100)
        after = "no EAGAIN"
    except BlockingIOError:
        after = "EAGAIN"
    out(ok=empty == "EAGAIN" and after == "EAGAIN" and data == b"ping"
        and src == (host, port), empty=empty, after=after, ready=bool(ready),
        source=list(src) if src else None)


def flood(host: str, port: int, count: int, size: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((host, port))
    pad = os.urandom(size - 4)
    got: list[int] = []
    bad = 0
    window = 64
    started = time.monotonic()

    def take(timeout: float) -> bool:
        nonlocal bad
        ready, _, _ = select.select([s], [], [], timeout)
        if not ready:
            return False
        data = s.recv(65536)
        if data[4:] != pad:
            bad += 1
        got.append(struct.unpack("!I", data[:4])[0])
        return True

    sent = 0
    for seq in range(count):
        s.send(struct.pack("!I", seq) + pad)
        sent += 1
        while sent - len(got) >= window:
            if not take(2.0):
                break
    while take(2.0):
        pass
    took = time.monotonic() - started
    inversions = sum(1 for a, b in zip(got, got[1:]) if b < a)
    out(ok=True, sent=sent, received=len(got), distinct=len(set(got)), bad=bad,
        inversions=inversions, seconds=round(took, 3))


def rtt(host: str, port: int, count: int) -> None:
    """count sequential echoes of 64 bytes on a connected socket: the median round
    trip in ms."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    s.connect((host, port))
    times = []
    for i in range(count):
        msg = struct.pack("!I", i) * 16
        t0 = time.perf_counter()
        s.send(msg)
        if s.recv(100) != msg:
            out(ok=False, at=i)
            return
        times.append(time.perf_counter() - t0)
    times.sort()
    out(ok=True, median_ms=round(times[len(times) // 2] * 1000, 3))


def error(host: str, port: int, s: socket.socket | None = None) -> None:
    try:
        if s is None:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.connect((host, port))
        s.settimeout(30)
        s.send(b"must not arrive")
    except OSError as exc:
        out(ok=True, where="send", errno=exc.errno, error=errno.errorcode.get(exc.errno))
        return
    try:
        data = s.recv(100)
    except socket.timeout:
        out(ok=False, where="recv", error="timeout")
        return
    except OSError as exc:
        out(ok=True, where="recv", errno=exc.errno, error=errno.errorcode.get(exc.errno))
        return
    out(ok=False, where="recv", data=data.decode(errors="replace"))


def wait_go(path: str, s: socket.socket | None = None) -> None:
    """FILE.ready (holding s's local port), then wait for FILE.go."""
    with open(path + ".ready.tmp", "w") as f:
        f.write(str(s.getsockname()[1]) if s is not None else "")
    os.rename(path + ".ready.tmp", path + ".ready")
    deadline = time.monotonic() + 60
    while not os.path.exists(path + ".go") and time.monotonic() < deadline:
        time.sleep(0.05)


def twice(host: str, port: int, path: str) -> None:
    """Connected: an echo, then FILE.ready; once FILE.go exists, another echo and one
    unconnected (a reload in between: both must be asked again and carried)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    s.connect((host, port))
    s.send(b"one")
    first = s.recv(100)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(10)
    u.sendto(b"u1", (host, port))
    u1 = u.recv(100)
    wait_go(path)
    s.send(b"two")
    second = s.recv(100)
    u.sendto(b"u2", (host, port))
    u2 = u.recv(100)
    out(ok=(first, second, u1, u2) == (b"one", b"two", b"u1", b"u2"),
        got=[x.decode(errors="replace") for x in (first, second, u1, u2)])


def kernel_peer(port: int) -> list[object]:
    """The remote end the kernel holds for the IPv4 UDP socket bound to port (a
    handed-off socket's: hop 1's relay), from /proc/net/udp."""
    with open("/proc/net/udp") as f:
        for line in f.readlines()[1:]:
            local, remote = line.split()[1:3]
            if int(local.split(":")[1], 16) == port:
                ip, rport = remote.split(":")
                return [socket.inet_ntoa(struct.pack("<I", int(ip, 16))), int(rport, 16)]
    return ["", 0]


def closing(host: str, port: int, path: str, how: str) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    s.bind(("0.0.0.0", 0))
    s.connect((host, port))
    s.send(b"one")
    first = s.recv(100)
    mine = s.getsockname()[1]
    with open(path + ".ready.tmp", "w") as f:
        json.dump({"port": mine, "relay": kernel_peer(mine),
                   "first": first.decode(errors="replace")}, f)
    os.rename(path + ".ready.tmp", path + ".ready")
    deadline = time.monotonic() + 60
    while not os.path.exists(path + ".go") and time.monotonic() < deadline:
        time.sleep(0.005)
    if how == "exit":
        os._exit(0)                   # the kernel closes it: no close() call
    s.close()
    open(path + ".closed", "w").close()
    while not os.path.exists(path + ".end") and time.monotonic() < deadline:
        time.sleep(0.05)


def many(host: str, port: int, n: int) -> None:
    done = 0
    for i in range(n):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(10)
            s.sendto(b"n%d" % i, (host, port))
            data, _ = s.recvfrom(100)
            done += data == b"n%d" % i
    out(ok=done == n, done=done)


def midflow(host: str, port: int, path: str) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    s.connect((host, port))
    s.send(b"one")
    first = s.recv(100)
    wait_go(path, s)
    if first != b"one":
        out(ok=False, first=first.decode(errors="replace"))
        return
    error(host, port, s)


def mixed(host: str, port: int, bind: str = "127.0.0.1") -> None:
    """A carried socket (bound to loopback: it cannot be handed off) also gets
    datagrams from a local sender: those come untouched (short and long, whole and
    truncated), with their own source. bind 0.0.0.0 (mixedany): the same on a socket
    handed off, whose scratch before the program's buffers is longer."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((bind, 0))
    s.settimeout(10)
    s.sendto(b"carried", (host, port))
    echo, src = s.recvfrom(100)
    local = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    local.bind(("127.0.0.1", 0))
    short, long_ = b"short", bytes(range(200))
    to = ("127.0.0.1", s.getsockname()[1])
    local.sendto(short, to)
    local.sendto(long_, to)
    local.sendto(long_, to)
    got_short, src_short = s.recvfrom(100)
    got_long, src_long = s.recvfrom(1000)
    cut, _, flags, _ = s.recvmsg(50)
    out(ok=echo == b"carried" and src == (host, port) and got_short == short
        and got_long == long_ and src_short == src_long == local.getsockname()
        and cut == long_[:50] and bool(flags & socket.MSG_TRUNC),
        echo=echo == b"carried", short=got_short == short, long=got_long == long_,
        cut=cut == long_[:50], trunc=bool(flags & socket.MSG_TRUNC),
        sources=[list(src_short), list(src_long)])


def six(host: str, port: int) -> None:
    """An IPv6 socket sending to an IPv4 destination (::ffff:a.b.c.d)."""
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.settimeout(10)
    s.sendto(b"six", ("::ffff:" + host, port))
    data, src = s.recvfrom(100)
    out(ok=data == b"six" and src[:2] == ("::ffff:" + host, port), source=list(src[:2]))


def readable(fd: int) -> None:
    """Wait for a datagram (settimeout made the descriptor non-blocking)."""
    ready, _, _ = select.select([fd], [], [], 10)
    if not ready:
        raise TimeoutError(errno.ETIMEDOUT, f"no datagram on fd {fd}")


def vectored(host: str, port: int) -> None:
    """writev() and readv() on a connected socket: the datagram gathered from several
    buffers comes back whole, scattered over several; a short buffer cuts it as
    read() would; writev/recv and send/readv mix."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    s.connect((host, port))
    fd = s.fileno()
    marker = os.urandom(20)
    parts = [b"vec", marker, b"", b"tor"]
    sent = os.writev(fd, parts)
    head, tail = bytearray(7), bytearray(100)
    readable(fd)
    got = os.readv(fd, [head, bytearray(0), tail])
    whole = bytes(head + tail)[:got]
    os.writev(fd, [marker, marker])
    short = bytearray(6)
    readable(fd)
    cut = os.readv(fd, [short])
    os.writev(fd, [b"to ", b"recv"])
    to_recv = s.recv(100)
    s.send(b"from send")
    buf = bytearray(50)
    readable(fd)
    from_send = bytes(buf[:os.readv(fd, [buf])])
    # pwritev2()/preadv2() at the offset -1 are writev()/readv() on a socket (their
    # flags: RWF_NOWAIT is MSG_DONTWAIT there); at an offset they fail with ESPIPE
    os.pwritev(fd, [b"p", b"writev2"], -1, os.RWF_DSYNC)
    pbuf = bytearray(30)
    readable(fd)
    pv2 = bytes(pbuf[:os.preadv(fd, [pbuf], -1, os.RWF_NOWAIT)])
    try:
        os.pwritev(fd, [b"at an offset"], 0)
        espipe = False
    except OSError as exc:
        espipe = exc.errno == errno.ESPIPE
    joined = b"".join(parts)
    out(ok=sent == len(joined) and whole == joined and cut == 6
        and bytes(short) == marker[:6] and to_recv == b"to recv"
        and from_send == b"from send" and pv2 == b"pwritev2" and espipe,
        sent=sent, whole=whole == joined, cut=cut, to_recv=to_recv.decode(errors="replace"),
        from_send=from_send.decode(errors="replace"), pv2=pv2.decode(errors="replace"),
        espipe=espipe)


def copies(host: str, port: int) -> None:
    """A carried socket copied: by os.dup() (fcntl F_DUPFD_CLOEXEC), os.dup2() (dup2),
    os.dup2(inheritable=False) (dup3), and wrapped as a socket object; connected and
    not. Each copy sends enveloped and receives stripped; the original still works. A
    plain socket dup2()ed onto a copy is plain again."""
    where = socket.gethostbyname(host)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    s.connect((where, port))
    got: dict[str, object] = {}
    s.send(b"original")
    got["original"] = s.recv(100) == b"original"
    d = os.dup(s.fileno())
    os.write(d, b"dup")
    readable(d)
    got["dup"] = os.read(d, 100) == b"dup"
    spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(2)]
    os.dup2(s.fileno(), spare[0])
    os.write(spare[0], b"dup2")
    readable(spare[0])
    got["dup2"] = os.read(spare[0], 100) == b"dup2"
    os.dup2(s.fileno(), spare[1], inheritable=False)
    os.write(spare[1], b"dup3")
    readable(spare[1])
    got["dup3"] = os.read(spare[1], 100) == b"dup3"
    w = socket.socket(fileno=os.dup(s.fileno()))
    w.settimeout(10)
    w.send(b"wrapped")
    got["wrapped"] = w.recv(100) == b"wrapped" and w.getpeername() == (where, port)
    s.send(b"again")
    got["original_again"] = s.recv(100) == b"again"
    # unconnected: the copy of a socket that sent by address receives stripped, with
    # the real source
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(10)
    u.sendto(b"u", (host, port))
    got["unconnected"] = u.recvfrom(100) == (b"u", (where, port))
    uc = socket.socket(fileno=os.dup(u.fileno()))
    uc.settimeout(10)
    u.sendto(b"uc", (host, port))
    got["unconnected_copy"] = uc.recvfrom(100) == (b"uc", (where, port))
    # a plain socket put over a carried copy: what a local sender sends arrives as is
    plain = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    plain.bind(("127.0.0.1", 0))
    os.dup2(plain.fileno(), d)
    local = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = os.urandom(60)
    local.sendto(payload, plain.getsockname())
    readable(d)
    got["plain_over_copy"] = os.read(d, 100) == payload
    out(ok=all(got.values()), **got)


def main() -> None:
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    try:
        if mode == "flood":
            flood(host, port, int(sys.argv[4]), int(sys.argv[5]))
        elif mode == "closing":
            closing(host, port, sys.argv[4], sys.argv[5])
        elif mode == "many":
            many(host, port, int(sys.argv[4]))
        elif mode == "midflow":
            midflow(host, port, sys.argv[4])
        elif mode == "rtt":
            rtt(host, port, int(sys.argv[4]))
        elif mode == "twice":
            twice(host, port, sys.argv[4])
        elif mode == "mixedany":
            mixed(host, port, "0.0.0.0")
        else:
            {"sendto": sendto, "connected": connected, "nonblock": nonblock,
             "error": error, "mixed": mixed, "six": six, "vectored": vectored,
             "copies": copies}[mode](host, port)
    except OSError as exc:
        out(ok=False, errno=exc.errno, error=str(exc))


if __name__ == "__main__":
    main()

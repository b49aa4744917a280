"""Python network clients the integration tests run inside the client zone, usually under
socksify. Standard library only. Every subcommand prints one JSON object as its last
stdout line and exits 0 when it did what it was asked, 1 otherwise.

    netclient.py connect HOST PORT            plain connect() (IPv6 if HOST has a ':');
                                              reports errno and getpeername()
    netclient.py fetch URL                    urllib GET; sha256 of the body
    netclient.py rawfetch HOST PORT PATH      raw socket HTTP/1.0 GET; sha256 of the body
    netclient.py threads N URL                N threads each doing `fetch URL` at once
    netclient.py halfclose HOST PORT NBYTES   send NBYTES, shutdown(SHUT_WR), read reply
    netclient.py asyncfetch HOST PORT PATH    asyncio.open_connection GET (non-blocking)
    netclient.py fdcheck N HOST PORT PATH     N sequential fetches on non-blocking
                                              sockets; open fds and file flags before/after
    netclient.py forkfetch HOST PORT PATH     fetch, fork, then parent and child fetch
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import socket
import sys
import threading
import urllib.error
import urllib.request
from typing import Any

TIMEOUT = float(os.environ.get("NETCLIENT_TIMEOUT", "60"))


def out(obj: dict[str, Any]) -> int:
    print(json.dumps(obj), flush=True)
    return 0 if obj.get("ok") else 1


def oserror(exc: BaseException) -> dict[str, Any]:
    while isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    e = getattr(exc, "errno", None)
    return {"ok": False, "errno": e, "errname": errno.errorcode.get(e, None) if e else None,
            "error": f"{type(exc).__name__}: {exc}"}


def split_http(data: bytes) -> tuple[str, bytes]:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        raise ValueError(f"no HTTP header end in {len(data)} bytes: {data[:200]!r}")
    return head.split(b"\r\n", 1)[0].decode(errors="replace"), body


def cmd_connect(host: str, port: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    try:
        s.connect((host, int(port)))
    except OSError as exc:
        return out(oserror(exc))
    finally:
        peer = None
        try:
            peer = s.getpeername()
        except OSError:
            pass
        s.close()
    return out({"ok": True, "peer": list(peer) if peer else None})


def fetch(url: str) -> dict[str, Any]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT) as resp:
            h = hashlib.sha256()
            n = 0
            while True:
                chunk = resp.read(262144)
                if not chunk:
                    break
                h.update(chunk)
                n += len(chunk)
            return {"ok": True, "status": resp.status, "sha256": h.hexdigest(), "bytes": n}
    except OSError as exc:
        return oserror(exc)


def cmd_fetch(url: str) -> int:
    return out(fetch(url))


def cmd_rawfetch(host: str, port: str, path: str) -> int:
    try:
        with socket.create_connection((host, int(port)), timeout=TIMEOUT) as s:
            s.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            chunks = []
            while True:
                chunk = s.recv(262144)
                if not chunk:
                    break
                chunks.append(chunk)
    except OSError as exc:
        return out(oserror(exc))
    status, body = split_http(b"".join(chunks))
    return out({"ok": " 200 " in status, "status": status,
                "sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)})


def cmd_threads(n: str, url: str) -> int:
    results: list[dict[str, Any] | None] = [None] * int(n)
    barrier = threading.Barrier(int(n), timeout=TIMEOUT)

    def work(i: int) -> None:
        try:
            barrier.wait()
        except threading.BrokenBarrierError:
            pass
        results[i] = fetch(url)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(int(n))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT * 2)
    done = [r if r is not None else {"ok": False, "error": "thread did not finish"}
            for r in results]
    return out({"ok": all(r["ok"] for r in done), "results": done})


def cmd_halfclose(host: str, port: str, nbytes: str) -> int:
    data = os.urandom(int(nbytes))
    try:
        with socket.create_connection((host, int(port)), timeout=TIMEOUT) as s:
            view = memoryview(data)
            while view:
                sent = s.send(view[:65536])
                view = view[sent:]
            s.shutdown(socket.SHUT_WR)
            reply = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
    except OSError as exc:
        return out(oserror(exc))
    return out({"ok": True, "sent_sha256": hashlib.sha256(data).hexdigest(),
                "sent_bytes": len(data), "reply": reply.decode(errors="replace")})


async def afetch(host: str, port: int, path: str) -> dict[str, Any]:
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), TIMEOUT)
    except (OSError, asyncio.TimeoutError) as exc:
        return oserror(exc)
    sock = writer.get_extra_info("socket")
    blocking = (sock.gettimeout() != 0.0) if sock is not None else None
    writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    await writer.wait_closed()
    status, body = split_http(data)
    return {"ok": " 200 " in status, "status": status, "socket_blocking": blocking,
            "sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}


def cmd_asyncfetch(host: str, port: str, path: str) -> int:
    return out(asyncio.run(afetch(host, int(port), path)))


def _open_fds() -> list[int]:
    """The open fds, without the shim's control connection (which it keeps open
    between requests, docs/wire.md): those are counted by control_connections()."""
    return sorted(int(fd) for fd in os.listdir("/proc/self/fd")
                  if not _is_control_connection(int(fd)))


def _is_control_connection(fd: int) -> bool:
    """Is fd a Unix socket connected to socksify's control socket?"""
    try:
        dup = os.dup(fd)
    except OSError:
        return False
    try:
        s = socket.socket(fileno=dup)
    except OSError:
        os.close(dup)
        return False
    try:
        peer = s.getpeername() if s.family == socket.AF_UNIX else ""
    except OSError:
        peer = ""
    finally:
        s.close()
    return isinstance(peer, str) and peer.endswith("control.sock")


def control_connections() -> int:
    return sum(_is_control_connection(int(fd)) for fd in os.listdir("/proc/self/fd"))


def _nonblocking_fetch(host: str, port: int, path: str) -> tuple[int, int, str]:
    """One GET on an O_NONBLOCK socket driven by select(); returns the socket's file
    flags before and after connect(), and the body's sha256."""
    import fcntl
    import select
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setblocking(False)
        before = fcntl.fcntl(s.fileno(), fcntl.F_GETFL)
        err = s.connect_ex((host, port))
        if err == errno.EINPROGRESS:
            select.select([], [s], [], TIMEOUT)
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
        after = fcntl.fcntl(s.fileno(), fcntl.F_GETFL)
        request = f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode()
        while request:
            select.select([], [s], [], TIMEOUT)
            request = request[s.send(request):]
        chunks = []
        while True:
            if not select.select([s], [], [], TIMEOUT)[0]:
                raise OSError(errno.ETIMEDOUT, "no data")
            chunk = s.recv(262144)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        s.close()
    _, body = split_http(b"".join(chunks))
    return before, after, hashlib.sha256(body).hexdigest()


def cmd_fdcheck(n: str, host: str, port: str, path: str) -> int:
    fds_before = _open_fds()
    hashes, flags = set(), set()
    try:
        for _ in range(int(n)):
            before, after, digest = _nonblocking_fetch(host, int(port), path)
            hashes.add(digest)
            flags.add((before, after))
    except OSError as exc:
        return out(oserror(exc))
    fds_after = _open_fds()
    return out({"ok": True, "fds_before": fds_before, "fds_after": fds_after,
                "control_connections": control_connections(),
                "flags": sorted(flags), "sha256": sorted(hashes)})


def cmd_forkfetch(host: str, port: str, path: str) -> int:
    try:
        first = _nonblocking_fetch(host, int(port), path)[2]   # shim initialised here
    except OSError as exc:
        return out(oserror(exc))
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        try:
            digest = _nonblocking_fetch(host, int(port), path)[2]
        except OSError as exc:
            digest = f"error: {exc}"
        os.write(wfd, digest.encode())
        os._exit(0)
    os.close(wfd)
    try:
        parent = _nonblocking_fetch(host, int(port), path)[2]
    except OSError as exc:
        parent = f"error: {exc}"
    child = b""
    while chunk := os.read(rfd, 4096):
        child += chunk
    _, status = os.waitpid(pid, 0)
    return out({"ok": status == 0, "sha256": [first, parent, child.decode()]})


COMMANDS = {"connect": cmd_connect, "fetch": cmd_fetch, "rawfetch": cmd_rawfetch,
            "threads": cmd_threads, "halfclose": cmd_halfclose, "asyncfetch": cmd_asyncfetch,
            "fdcheck": cmd_fdcheck, "forkfetch": cmd_forkfetch}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(COMMANDS)}}} ARGS...")
    sys.exit(COMMANDS[sys.argv[1]](*sys.argv[2:]))

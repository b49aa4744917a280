"""The load tests' client (tests/integration/test_load.py), run under socksify. Standard
library only; one process, one thread per connection in flight. It talks to an
echo-and-hash server ("<sha256 hex> <count>\\n" after EOF) and checks every reply
against the hash of the random bytes it sent. Prints one JSON object as its last line;
exit status 0 when every connection's reply matched.

    loadclient.py hold N NBYTES HOST PORT READY GO
        N connections at once, all held open: each connects and sends the first half
        of its NBYTES; when all N have, the file READY is written (with N) and the
        client waits (at most 300 s) for the file GO to exist; then each sends the
        rest, shuts down its sending side and checks the reply.
    loadclient.py churn TOTAL INFLIGHT NBYTES HOST PORT
        TOTAL connections one after another on INFLIGHT threads: connect, send
        NBYTES, shut down, check the reply, close.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import socket
import sys
import threading
import time
from typing import Any

TIMEOUT = 120.0


def raise_fd_limit(wanted: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def recv_reply(s: socket.socket) -> str:
    chunks = []
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace").strip()


def check_reply(s: socket.socket, data: bytes) -> None:
    """After SHUT_WR: the echo server's "<sha256> <count>" must match what was sent."""
    reply = recv_reply(s)
    want = f"{hashlib.sha256(data).hexdigest()} {len(data)}"
    if reply != want:
        raise ValueError(f"reply {reply!r}, expected {want!r}")


def describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def cmd_hold(n_s: str, nbytes_s: str, host: str, port_s: str, ready: str, go: str) -> int:
    n, nbytes, port = int(n_s), int(nbytes_s), int(port_s)
    limit = raise_fd_limit(2 * n + 256)
    threading.stack_size(256 * 1024)
    lock = threading.Lock()
    connected = threading.Semaphore(0)
    go_event = threading.Event()
    failures: list[str] = []
    ok = [0]
    held = [0]

    def work(i: int) -> None:
        data = os.urandom(nbytes)
        half = nbytes // 2
        s = socket.socket()
        try:
            s.settimeout(TIMEOUT)
            s.connect((host, port))
            s.sendall(data[:half])
            with lock:
                held[0] += 1
            connected.release()
            if not go_event.wait(TIMEOUT * 3):
                raise TimeoutError("never told to go on")
            s.sendall(data[half:])
            s.shutdown(socket.SHUT_WR)
            check_reply(s, data)
            with lock:
                ok[0] += 1
        except Exception as exc:   # reported, and counted as a failure
            with lock:
                failures.append(f"{i}: {describe(exc)}")
            connected.release()
        finally:
            s.close()

    started = time.monotonic()
    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for _ in range(n):
        if not connected.acquire(timeout=TIMEOUT * 2):
            break
    with lock:
        open_now = held[0]
    connect_time = time.monotonic() - started
    with open(ready + ".tmp", "w") as f:
        f.write(f"{open_now}\n")
    os.rename(ready + ".tmp", ready)
    deadline = time.monotonic() + 300
    while not os.path.exists(go) and time.monotonic() < deadline:
        time.sleep(0.05)
    go_event.set()
    for t in threads:
        t.join(TIMEOUT * 2)
    result: dict[str, Any] = {
        "ok": ok[0] == n, "done": ok[0], "held": open_now, "fd_limit": limit,
        "connect_seconds": round(connect_time, 2),
        "seconds": round(time.monotonic() - started, 2),
        "failures": len(failures), "first_failures": failures[:5]}
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


def cmd_churn(total_s: str, inflight_s: str, nbytes_s: str, host: str, port_s: str) -> int:
    total, inflight, nbytes, port = int(total_s), int(inflight_s), int(nbytes_s), int(port_s)
    raise_fd_limit(inflight * 2 + 256)
    lock = threading.Lock()
    next_i = [0]
    ok = [0]
    failures: list[str] = []

    def work() -> None:
        while True:
            with lock:
                i = next_i[0]
                if i >= total:
                    return
                next_i[0] += 1
            data = os.urandom(nbytes)
            try:
                with socket.create_connection((host, port), timeout=TIMEOUT) as s:
                    s.sendall(data)
                    s.shutdown(socket.SHUT_WR)
                    check_reply(s, data)
                with lock:
                    ok[0] += 1
            except Exception as exc:   # reported, and counted as a failure
                with lock:
                    failures.append(f"{i}: {describe(exc)}")
                    if len(failures) > 50:   # something is badly wrong: stop early
                        next_i[0] = total

    started = time.monotonic()
    threads = [threading.Thread(target=work, daemon=True) for _ in range(inflight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = {"ok": ok[0] == total, "done": ok[0], "seconds":
              round(time.monotonic() - started, 2), "failures": len(failures),
              "first_failures": failures[:5]}
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


COMMANDS = {"hold": cmd_hold, "churn": cmd_churn}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(COMMANDS)}}} ARGS...")
    sys.exit(COMMANDS[sys.argv[1]](*sys.argv[2:]))

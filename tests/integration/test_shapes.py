"""Program shapes under the shim, through the lab chain: many threads at once, workers
forked after start-up, a daemon that double-forks and closes every fd, a program that
tramples on fds it does not know, signals firing during connect(), an exec chain in
one process, and the fds a program holds after 1,000 connects.

The programs are small C programs (tests/programs/*.c, built with cc at test time): it
is libc's and the kernel's behaviour that matters here. They talk to the far echo
server, which hashes what it got and answers "<sha256> <count>"; the data is a pattern
both sides compute (tests/programs/shapes_common.h), so every byte is checked. The
near witness is directly reachable from the client zone: a connection that went
direct would show there with the client's own address."""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import lab as lablib
from conftest import skip_or_fail

pytestmark = pytest.mark.lab

PROGRAMS = Path(__file__).resolve().parent.parent / "programs"
GRANT4 = bytes([0, 90, 0, 0, 0, 0, 0, 0])


# --- helpers ------------------------------------------------------------------------------

class Programs:
    """progs["NAME"]: tests/programs/NAME.c, built (once) into a directory every user
    may read."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.built: dict[str, Path] = {}

    def __getitem__(self, name: str) -> Path:
        if name not in self.built:
            cc = shutil.which("cc") or shutil.which("gcc")
            if cc is None:
                skip_or_fail("no C compiler (cc) to build the shape programs")
            src, exe = PROGRAMS / f"{name}.c", self.out / name
            r = subprocess.run([cc, "-O1", "-Wall", "-pthread", "-I", str(PROGRAMS), "-o",
                                str(exe), str(src)], capture_output=True, text=True,
                               timeout=120)
            assert r.returncode == 0, f"cannot build {src}:\n{r.stderr}"
            self.built[name] = exe
        return self.built[name]


@pytest.fixture(scope="module")
def progs(tmp_path_factory: pytest.TempPathFactory) -> Programs:
    out = tmp_path_factory.mktemp("shape-programs")
    out.chmod(0o755)
    return Programs(out)


@functools.lru_cache(maxsize=4096)
def expected_reply(nbytes: int, seed: int) -> str:
    """The echo server's answer to nbytes of the pattern with this seed
    (shapes_common.h: byte i is (i * 31 + seed + (i >> 11)) & 0xff)."""
    data = bytes((i * 31 + seed + (i >> 11)) & 0xFF for i in range(nbytes))
    return f"{hashlib.sha256(data).hexdigest()} {nbytes}"


def fields(line: str) -> dict[str, str]:
    """'w 3 0 pid 12 rc OK reply X Y' -> {'w': '3', 'pid': '12', 'rc': 'OK', ...}:
    each known key takes the word after it; 'reply' takes the rest of the line."""
    words = line.split()
    out: dict[str, str] = {}
    i = 0
    while i < len(words):
        if words[i] == "reply":
            out["reply"] = " ".join(words[i + 1:])
            break
        if i + 1 < len(words):
            out[words[i]] = words[i + 1]
        i += 2
    return out


def lines_starting(text: str, word: str) -> list[dict[str, str]]:
    return [fields(ln) for ln in text.splitlines() if ln.split()[:1] == [word]]


def echo_target(lab: lablib.Lab) -> list[str]:
    return [lab.far_ip, str(lab.echo.port)]


def witness_target(lab: lablib.Lab) -> list[str]:
    return [lab.proxy_near_ip, str(lab.witness.port)]


def assert_witness_via_hop(lab: lablib.Lab, before: int, expected: int) -> None:
    """The witness saw exactly `expected` new connections, all from the proxy zone
    (through a hop), none from the client's own address (direct)."""
    try:
        lablib.wait_until(lambda: len(lab.witness.accepted) >= before + expected, 10,
                          "the witness connections")
    except TimeoutError:
        pass
    new = lab.witness.accepted[before:]
    assert [a for a, _ in new] == [lab.proxy_near_ip] * expected, new


def echo_addr(lab: lablib.Lab) -> str:
    return f"{lab.far_ip}.{lab.echo.port}"


# --- 100 threads, forked workers -------------------------------------------------------

def test_hundred_threads_at_once(lab: lablib.Lab, sk, progs) -> None:
    """100 threads released by one barrier connect through 3 hops at the same moment;
    every exchange is hash-checked, and each hop opened 100 tunnels."""
    n, nbytes = 100, 50_000
    before = lab.hop_connects()
    echo_before = lab.echo.count()
    res = sk.run([progs["workers"], "threads", str(n), "1", *echo_target(lab), str(nbytes)],
                 via=sk.hops(3), timeout=180)
    assert res.returncode == 0, sk.describe(res)
    done = lines_starting(res.stdout, "w")
    assert sorted(int(d["w"]) for d in done) == list(range(n)), sk.describe(res)
    bad = [d for d in done if d["rc"] != "OK" or d["reply"] != expected_reply(nbytes,
                                                                            int(d["w"]))]
    assert bad == [], f"{bad[:5]}\n{sk.describe(res)}"
    deltas = lab.wait_hop_connects(before, [n, n, n], timeout=30)
    targets = lab.hop_targets_since(before)
    assert deltas == [n, n, n], deltas
    assert targets[0].count(lab.hop_addr(2)) == n and targets[1].count(lab.hop_addr(3)) == n
    assert targets[2].count(echo_addr(lab)) == n, targets[2][:5]
    new = lab.echo.accepted[echo_before:]
    assert len(new) == n and {a for a, _ in new} == {lab.proxy_far_ip}


def test_workers_forked_after_start_up(lab: lablib.Lab, sk, progs) -> None:
    """A pre-fork server's shape: the parent never connects; it forks 8 workers, which
    connect at the same moment, 3 times each, through 3 hops."""
    n, rounds, nbytes = 8, 3, 100_000
    before = lab.hop_connects()
    res = sk.run([progs["workers"], "fork", str(n), str(rounds), *echo_target(lab),
                  str(nbytes)], via=sk.hops(3), timeout=180)
    assert res.returncode == 0, sk.describe(res)
    done = lines_starting(res.stdout, "w")
    assert len(done) == n * rounds, sk.describe(res)
    bad = [d for d in done if d["rc"] != "OK"
           or d["reply"] != expected_reply(nbytes, int(d["w"]) * rounds + int(d["r"]))]
    assert bad == [], f"{bad[:5]}\n{sk.describe(res)}"
    pids = {d["pid"] for d in done}
    assert len(pids) == n, pids                          # one process per worker
    assert sorted((int(d["w"]), int(d["r"])) for d in done) == \
        [(i, r) for i in range(n) for r in range(rounds)]
    deltas = lab.wait_hop_connects(before, [n * rounds] * 3, timeout=30)
    assert deltas == [n * rounds] * 3, deltas


# --- a daemon: double fork, setsid, every fd closed -------------------------------------

def _daemonize_argv(lab: lablib.Lab, progs, result: Path, how: str, stdio: str,
                    nbytes: int) -> list[str]:
    return [str(progs["daemonize"]), str(result), how, stdio, *echo_target(lab),
            *witness_target(lab), str(nbytes), "7"]


def _daemon_records(result: Path) -> tuple[dict[str, str], list[dict[str, str]]]:
    """RESULT's lines: pid/fds/witness as a dict, the echo lines as a list."""
    try:
        text = result.read_text()
    except FileNotFoundError:
        return {}, []
    info: dict[str, str] = {}
    for ln in text.splitlines():
        w = ln.split()
        if w[:1] in (["pid"], ["fds"]):
            info[w[0]] = w[1]
        elif w[:1] == ["witness"]:
            info.update({"witness_" + k: v for k, v in fields(" ".join(w[1:])).items()})
        elif w == ["done"]:
            info["done"] = "yes"
    return info, lines_starting(text, "echo")


def _kill_leftover(info: dict[str, str]) -> None:
    """The daemon runs in its own session: make sure it is gone (it exits by itself
    after "done"; this is for a failed test)."""
    try:
        pid = int(info.get("pid", "0"))
        if pid > 1 and b"daemonize" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, 9)
    except (OSError, ValueError):
        pass


@pytest.mark.parametrize("how,stdio", [("close_range", "devnull"), ("loop", "sockets")])
def test_daemon_that_closes_every_fd(lab: lablib.Lab, sk, progs, tmp_path: Path,
                                     how: str, stdio: str) -> None:
    """Double fork, setsid, close every fd (close_range, or close() up to the limit),
    then /dev/null on 0-2 -- or nothing there, so the connected socket is fd 2: both
    echo exchanges go through 3 hops intact, and the witness sees the hop, not us."""
    nbytes = 200_000
    result = tmp_path / "daemon.out"
    witness_before = len(lab.witness.accepted)
    before = lab.hop_connects()
    res = sk.run(_daemonize_argv(lab, progs, result, how, stdio, nbytes), via=sk.hops(3),
                 timeout=120)
    info, echoes = _daemon_records(result)
    _kill_leftover(info)
    report = f"{result.read_text() if result.exists() else '(no result)'}\n{sk.describe(res)}"
    assert res.returncode == 0 and info.get("done") == "yes", report
    # nothing survived the close: only what the daemon reopened itself
    assert info["fds"] == ("3" if stdio == "devnull" else "2"), report
    assert [e["rc"] for e in echoes] == ["OK", "OK"], report
    assert [e["reply"] for e in echoes] == [expected_reply(nbytes, 7),
                                            expected_reply(nbytes, 8)], report
    if stdio == "sockets":
        assert [e["fd"] for e in echoes] == ["2", "2"], report
    assert info["witness_rc"] == "OK", report
    assert_witness_via_hop(lab, witness_before, 1)
    deltas = lab.wait_hop_connects(before, [3, 3, 3])
    assert deltas == [3, 3, 3], deltas


@pytest.mark.parametrize("how,stdio", [
    ("close_range", "devnull"),
    # fd 2 is the program's own unconnected TCP socket: the shim must not write its
    # warning there (SIGPIPE would kill the program; shim/linux/log.c)
    ("loop", "sockets"),
])
def test_daemon_fails_closed_without_the_socksify_daemon(lab: lablib.Lab, sk, progs,
                                                         tmp_path: Path, how: str,
                                                         stdio: str) -> None:
    """The same daemon with the shim preloaded but no socksify daemon to ask: every
    connect is refused (ECONNREFUSED), and nothing reaches the echo server or the
    witness."""
    result = tmp_path / "daemon.out"
    witness_before, echo_before = len(lab.witness.accepted), lab.echo.count()
    env = {**sk.env, "LD_PRELOAD": sk.shim, "DAEMONIZE_WAIT": "10"}
    res = lab.client_run(_daemonize_argv(lab, progs, result, how, stdio, 1000), env=env,
                         timeout=60)
    info, echoes = _daemon_records(result)
    _kill_leftover(info)
    report = f"{result.read_text() if result.exists() else '(no result)'}\n{res.describe()}"
    assert res.returncode == 0 and info.get("done") == "yes", report
    assert [e["rc"] for e in echoes] == ["ECONNREFUSED"] * 2, report
    assert info["witness_rc"] == "ECONNREFUSED", report
    time.sleep(0.5)      # a leaked SYN would have been accepted by now
    assert len(lab.witness.accepted) == witness_before
    assert lab.echo.count() == echo_before


# --- fds trampled between connects ------------------------------------------------------

@pytest.mark.parametrize("mode", ["dup2", "close"])
def test_fds_trampled_between_connects(lab: lablib.Lab, sk, progs, mode: str) -> None:
    """Between its connects the program dup2()s /dev/null over every fd from 3 to 200,
    or closes every fd from 3 to its limit: the next connects still go through the
    chain intact, and none goes direct."""
    rounds, nbytes = 5, 100_000
    witness_before = len(lab.witness.accepted)
    res = sk.run([progs["fdclobber"], mode, str(rounds), "200", *echo_target(lab),
                  *witness_target(lab), str(nbytes)], via=sk.hops(3), timeout=120)
    assert res.returncode == 0, sk.describe(res)
    done = lines_starting(res.stdout, "round")
    assert len(done) == rounds, sk.describe(res)
    for d in done:
        assert d["rc"] == "OK" and d["witness"] == "OK", sk.describe(res)
        assert d["reply"] == expected_reply(nbytes, int(d["round"])), sk.describe(res)
    if mode == "dup2":   # the fds up to 200 were taken: the sockets came after them
        assert all(int(d["fd"]) > 200 for d in done[1:]), sk.describe(res)
    assert_witness_via_hop(lab, witness_before, rounds)


# --- an exec chain in one process ---------------------------------------------------------

def test_exec_chain_in_one_process(lab: lablib.Lab, sk, progs) -> None:
    """execv, then fexecve with an empty environment, then execle with only PATH -- the
    same pid all along -- then connect: the shim came along every step (test_children.py
    covers chains through sh and env -i), the bytes cross 3 hops, nothing goes direct."""
    nbytes = 100_000
    exe = str(progs["execchain"])
    witness_before = len(lab.witness.accepted)
    res = sk.run([exe, exe, "0", *echo_target(lab), *witness_target(lab), str(nbytes)],
                 via=sk.hops(3), timeout=60)
    assert res.returncode == 0, sk.describe(res)
    stages = lines_starting(res.stdout, "stage")
    assert [s["stage"] for s in stages] == ["0", "1", "2", "3"], sk.describe(res)
    assert len({s["pid"] for s in stages}) == 1, stages
    assert [s["preload"] for s in stages] == ["yes"] * 4, stages
    echo, = lines_starting(res.stdout, "echo")
    assert echo["rc"] == "OK" and echo["reply"] == expected_reply(nbytes, 3), \
        sk.describe(res)
    witness, = lines_starting(res.stdout, "witness")
    assert witness["rc"] == "OK", sk.describe(res)
    assert_witness_via_hop(lab, witness_before, 1)


# --- signals during connect() ---------------------------------------------------------------

@pytest.fixture
def slow_hop(lab: lablib.Lab) -> Iterator[lablib.HostileSocksServer]:
    """A SOCKS4 hop that takes 0.3 s to grant, then plays the echo-and-hash target."""
    def script(conn: socket.socket) -> None:
        time.sleep(0.3)
        conn.sendall(GRANT4)
        lablib.echo_hash(conn)
    srv = lab.hostile_hop(script)
    yield srv
    srv.close()


def _signal_lines(res: lablib.Result) -> tuple[list[dict[str, str]], int]:
    total = [int(ln.split()[1]) for ln in res.stdout.splitlines() if ln.startswith("signals ")]
    return lines_starting(res.stdout, "c"), (total[0] if total else -1)


@pytest.mark.parametrize("flags", ["norestart", "restart"])
def test_signals_during_a_slow_chain(lab: lablib.Lab, sk, progs, slow_hop,
                                     flags: str) -> None:
    """SIGALRM every millisecond, its handler installed with or without SA_RESTART,
    while connect() waits 0.3 s or more for a 3-hop chain (2 danted hops, then a hop
    that grants late): the handler runs hundreds of times during each connect(), and
    connect() still returns 0 with the chain complete -- the shim does not return
    EINTR for a proxied destination (docs/data-path.md) -- and the bytes arrive intact."""
    n, nbytes = 6, 200_000
    res = sk.run([progs["sigconnect"], flags, str(n), *echo_target(lab), str(nbytes)],
                 via=[lab.hops[0].url, lab.hops[1].url, slow_hop.url], timeout=120)
    assert res.returncode == 0, sk.describe(res)
    done, total = _signal_lines(res)
    assert len(done) == n, sk.describe(res)
    for d in done:
        assert d["rc"] == "OK" and d["again"] == "-", sk.describe(res)
        assert d["reply"] == expected_reply(nbytes, int(d["c"])), sk.describe(res)
        # the chain takes at least 0.3 s: the 1 ms timer fired during the connect
        assert int(d["signals"]) > 0, sk.describe(res)
    assert total > n, sk.describe(res)
    assert len(slow_hop.requests) == n and slow_hop.errors == []


def test_signals_during_many_quick_connects(lab: lablib.Lab, sk, progs) -> None:
    """300 connects through one danted hop under the same 1 ms SIGALRM (no SA_RESTART):
    signals also land in the short steps (the control exchange, the loopback connect to
    the relay, the token); every connect succeeds and every exchange is intact."""
    n, nbytes = 300, 2000
    res = sk.run([progs["sigconnect"], "norestart", str(n), *echo_target(lab),
                  str(nbytes)], via=sk.hops(1), timeout=180)
    assert res.returncode == 0, sk.describe(res)
    done, total = _signal_lines(res)
    assert len(done) == n, sk.describe(res)
    bad = [d for d in done if d["rc"] != "OK"
           or d["reply"] != expected_reply(nbytes, int(d["c"]))]
    assert bad == [], f"{bad[:5]}\n{sk.describe(res)}"
    assert sum(int(d["signals"]) for d in done) > 0 and total > 0, sk.describe(res)


@pytest.mark.parametrize("preload", [False, True], ids=["no-shim", "shim"])
@pytest.mark.parametrize("flags", ["norestart", "restart"])
def test_signal_during_a_real_connect(lab: lablib.Lab, sk, progs, flags: str,
                                      preload: bool) -> None:
    """What Linux itself does, as the reference for the test above, on a loopback
    connect (which the shim leaves to the kernel): a listener whose accept queue is
    full drops the SYN, so connect() waits for the retransmission (about 1 s). Without
    SA_RESTART the handler's signal makes it fail with EINTR, the connection goes on in
    the background (a second connect() on the blocking socket waits again), and poll()
    + SO_ERROR then complete it; with SA_RESTART it just succeeds. The same with the
    shim preloaded."""
    def make() -> socket.socket:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(0)
        return s
    listener: socket.socket = lablib.in_netns(lab.client_ns, make)  # type: ignore[assignment]
    port = listener.getsockname()[1]
    filler = lablib.socket_in(lab.client_ns)
    filler.connect(("127.0.0.1", port))          # fills the accept queue (backlog 0)
    served: list[socket.socket] = []

    def echo(conn: socket.socket) -> None:
        try:
            lablib.echo_hash(conn)
        except OSError:                          # the filler, closed by now
            pass
        finally:
            conn.close()

    def serve() -> None:
        time.sleep(0.3)                          # the program's first SYN is dropped
        filler.close()
        listener.settimeout(30)
        try:
            while True:
                conn, _ = listener.accept()
                served.append(conn)
                threading.Thread(target=echo, args=(conn,), daemon=True).start()
        except OSError:
            return
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    env = dict(sk.env)
    if preload:
        env["LD_PRELOAD"] = sk.shim
    nbytes = 5000
    try:
        res = lab.client_run([progs["sigconnect"], flags, "2", "127.0.0.1", str(port),
                              str(nbytes)], env=env, timeout=60)
    finally:
        try:
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept()
        except OSError:
            pass
        listener.close()
        t.join(40)
        filler.close()
        for c in served:
            c.close()
    assert res.returncode == 0, res.describe()
    done, _ = _signal_lines(res)
    assert [d["reply"] for d in done] == [expected_reply(nbytes, 0),
                                          expected_reply(nbytes, 1)], res.describe()
    first = done[0]
    if flags == "norestart":
        # a blocking socket's second connect() waits again: interrupted again (EINTR),
        # or done meanwhile (0); EALREADY is what a non-blocking one would get
        assert first["rc"] == "EINTR" and first["again"] in ("EINTR", "OK", "EALREADY"), \
            res.describe()
    else:
        assert (first["rc"], first["again"]) == ("OK", "-"), res.describe()
        assert int(first["signals"]) > 0, res.describe()


# --- fd hygiene ---------------------------------------------------------------------------

def _fd_table(text: str, when: str) -> dict[int, str]:
    """'before fd 3 -> socket:[123]' lines -> {3: 'socket:[123]'}."""
    table = {}
    for ln in text.splitlines():
        w = ln.split(" ", 4)
        if w[:2] == [when, "fd"] and len(w) == 5 and w[3] == "->":
            table[int(w[2])] = w[4]
    return table


def _kinds(table: dict[int, str]) -> dict[int, str]:
    """fd -> what it is, without inode numbers: pipe:[123] -> pipe, /dev/null stays."""
    return {fd: re.sub(r":\[\d+\]$", "", target) for fd, target in table.items()}


def test_fds_after_a_thousand_connects(lab: lablib.Lab, sk, progs) -> None:
    """1,000 connects through one hop -- blocking, O_NONBLOCK, with getpeername(), and
    one in four refused by the far end -- leave the program holding exactly the fds it
    started with, and the same fds as the same program without socksify (run against a
    loopback echo server in the client zone)."""
    n, nbytes = 1000, 2000
    refused_port = "9"            # nothing listens there in the far zone
    res = sk.run([progs["fdhygiene"], str(n), *echo_target(lab), refused_port,
                  str(nbytes)], via=sk.hops(1), timeout=300)
    assert res.returncode == 0, sk.describe(res)
    done = lines_starting(res.stdout, "c")
    assert len(done) == n, sk.describe(res)
    bad = [d for d in done if (d["rc"], d["reply"]) != (
        ("ECONNREFUSED", "-") if int(d["c"]) % 4 == 3
        else ("OK", expected_reply(nbytes, int(d["c"]))))]
    assert bad == [], f"{len(bad)} wrong, e.g. {bad[:5]}\n{sk.describe(res)}"
    before, after = _fd_table(res.stdout, "before"), _fd_table(res.stdout, "after")
    # the shim keeps one control connection (docs/wire.md), opened by the first connect
    control = [fd for fd, target in after.items() if target == "socksify-control"]
    assert len(control) == 1, res.stdout[-3000:]
    del after[control[0]]
    assert before and after == before, res.stdout[-3000:]

    # the same program without the shim, against a loopback echo server
    local = lablib.EchoHashServer(lablib.listener_in(lab.client_ns, "127.0.0.1"),
                                  "local-echo")
    try:
        closed = lablib.listener_in(lab.client_ns, "127.0.0.1")
        closed_port = closed.getsockname()[1]
        closed.close()            # a port where nothing listens (this namespace is ours)
        plain = lab.client_run([progs["fdhygiene"], "40", "127.0.0.1", str(local.port),
                                str(closed_port), str(nbytes)], env=sk.env, timeout=60)
    finally:
        local.close()
    assert plain.returncode == 0, plain.describe()
    plain_done = lines_starting(plain.stdout, "c")
    assert [d["rc"] for d in plain_done] == \
        ["ECONNREFUSED" if i % 4 == 3 else "OK" for i in range(40)], plain.describe()
    assert _kinds(after) == _kinds(_fd_table(plain.stdout, "after")), \
        f"with socksify: {after}\nwithout: {_fd_table(plain.stdout, 'after')}"

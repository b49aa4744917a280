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

import errno
import functools
import hashlib
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import lab as lablib
from conftest import skip_or_fail

pytestmark = pytest.mark.lab

PROGRAMS = Path(__file__).resolve().parent.parent / "programs"
GRANT4 = bytes([0, 90, 0, 0, 0, 0, 0, 0])


# --- helpers ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def progs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tests/programs/NAME.c built into a directory every user may read."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        skip_or_fail("no C compiler (cc) to build the shape programs")
    out = tmp_path_factory.mktemp("shape-programs")
    out.chmod(0o755)
    built = {}
    for src in sorted(PROGRAMS.glob("*.c")):
        exe = out / src.stem
        r = subprocess.run([cc, "-O1", "-Wall", "-pthread", "-I", str(PROGRAMS), "-o",
                            str(exe), str(src)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"cannot build {src}:\n{r.stderr}"
        built[src.stem] = exe
    return built


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

"""The DNS calls besides getaddrinfo(), watched on the wire: the res_* family (every
call a DNS query, made by glibc through internal calls LD_PRELOAD cannot catch) and
getaddrinfo_a(), from a real C program (tests/programs/dnscalls.c), and names under
`.localhost` (glibc sends them to DNS unless the hosts file names them). Under a chain
the client zone's recording resolver must see none of these names; the res_* calls
fail with h_errno NO_RECOVERY and the reason on stderr, getaddrinfo_a() gives a
stand-in address that connects through the chain."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import lab as lablib
from conftest import skip_or_fail

pytestmark = pytest.mark.lab

PROGRAM = Path(__file__).resolve().parent.parent / "programs" / "dnscalls.c"
NO_RECOVERY = 3     # netdb.h
HOST_NOT_FOUND = 1  # the recorder's NXDOMAIN
EACCES = 13


@pytest.fixture(scope="module")
def dnscalls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        skip_or_fail("no C compiler (cc) to build tests/programs/dnscalls.c")
    out = tmp_path_factory.mktemp("dnscalls")
    out.chmod(0o755)
    exe = out / "dnscalls"
    r = subprocess.run([cc, "-O1", "-Wall", "-pthread", "-o", str(exe), str(PROGRAM),
                        "-lresolv", "-lanl"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"cannot build {PROGRAM}:\n{r.stderr}"
    return exe


def s5(hop: lablib.Hop) -> str:
    return f"socks5://{hop.host}:{hop.port}"


def result_line(stdout: str, word: str) -> list[str]:
    lines = [ln.split() for ln in stdout.splitlines() if ln.split()[:1] == [word]]
    assert lines, f"no {word!r} line in {stdout!r}"
    return lines[0]


def assert_not_asked(lab: lablib.Lab, before: int, secret: str) -> None:
    time.sleep(0.5)                                  # a stray query would be in by now
    leaked = [n for n in lab.dns.seen()[before:] if secret in n.lower()]
    assert leaked == [], f"DNS leak: {leaked}"


CALLS = {
    "query": ["{name}"],
    "search": ["{name}"],
    "querydomain": ["{label}", "example"],
    "send": ["{name}"],
    "nquery": ["{name}"],
}


@pytest.mark.parametrize("call", list(CALLS))
def test_res_calls_under_a_chain_make_no_query(lab: lablib.Lab, sk, dnscalls: Path,
                                               call: str) -> None:
    label = f"secret-{call}-{os.urandom(3).hex()}"
    args = [a.format(name=f"{label}.example", label=label) for a in CALLS[call]]
    before = len(lab.dns.seen())
    res = sk.run([str(dnscalls), call, *args], via=[lab.hops[0].url, s5(lab.hops[1])])
    assert res.returncode == 0, sk.describe(res)
    words = result_line(res.stdout, call)
    assert words[1:] == ["rc", "-1", "h_errno", str(NO_RECOVERY), "errno", str(EACCES)], \
        sk.describe(res)
    function = "res_nquery" if call == "nquery" else f"res_{call}"
    assert f"{function}(" in res.stderr and "refused" in res.stderr, res.stderr
    if call == "nquery":                             # the context's own h_errno too
        assert f"res_h_errno {NO_RECOVERY}" in res.stdout, res.stdout
    assert_not_asked(lab, before, label)


def test_res_query_with_dns_local_reaches_the_resolver(lab: lablib.Lab, sk,
                                                       dnscalls: Path) -> None:
    """Control: with --dns local the policy lets the name be resolved here, and the
    recorder sees the query (so the empty records above mean something)."""
    name = f"allowed-{os.urandom(3).hex()}.example"
    res = sk.run([str(dnscalls), "query", name], via=sk.hops(1), opts=["--dns", "local"])
    assert res.returncode == 0, sk.describe(res)
    words = result_line(res.stdout, "query")
    assert words[1:5] == ["rc", "-1", "h_errno", str(HOST_NOT_FOUND)], res.stdout
    lablib.wait_until(lambda: name in lab.dns.seen(), 10, "the allowed query")


@pytest.mark.parametrize("mode", ["gai-wait", "gai-nowait"])
def test_getaddrinfo_a_gives_a_stand_in_that_goes_through_the_chain(
        lab: lablib.Lab, sk, dnscalls: Path, mode: str) -> None:
    """getaddrinfo_a() (GAI_WAIT; GAI_NOWAIT with a SIGEV_THREAD notification and
    gai_suspend()) of the far name: a stand-in address, no query, and an HTTP request
    to it that reaches the far server from the last hop."""
    m = f"{mode}-{os.urandom(4).hex()}"
    before = len(lab.dns.seen())
    res = sk.run([str(dnscalls), mode, lablib.FAR_NAME, str(lab.http_port),
                  f"/small.bin?m={m}"], via=[lab.hops[0].url, s5(lab.hops[1])])
    assert res.returncode == 0, sk.describe(res)
    gai = result_line(res.stdout, "gai")
    assert gai[1:5] == ["ret", "0", "status", "0"], sk.describe(res)
    assert gai[6].startswith("240."), res.stdout
    assert gai[8] == ("7" if mode == "gai-nowait" else "0"), res.stdout  # notified
    http = result_line(res.stdout, "http")
    assert http[1:3] == ["HTTP/1.0", "200"], sk.describe(res)
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
    assert_not_asked(lab, before, lablib.FAR_NAME)


def test_getaddrinfo_a_of_a_blocked_name_fails_without_a_query(
        lab: lablib.Lab, sk, dnscalls: Path) -> None:
    """A SOCKS4 last hop cannot carry names: the request fails (EAI_NONAME) and the
    name reaches no resolver."""
    name = f"secret-gai-{os.urandom(3).hex()}.example"
    before = len(lab.dns.seen())
    res = sk.run([str(dnscalls), "gai-nowait", name, "80"], via=sk.hops(2))
    assert res.returncode == 0, sk.describe(res)
    gai = result_line(res.stdout, "gai")
    assert gai[1:5] == ["ret", "0", "status", "-2"], sk.describe(res)  # EAI_NONAME
    assert gai[8] == "7", res.stdout
    assert_not_asked(lab, before, name)


def test_names_under_localhost_are_the_daemons(lab: lablib.Lab, sk) -> None:
    """`secret-name.localhost` is not in the client zone's hosts file, so glibc would
    ask DNS about it: under a chain Python gets a stand-in address, and the recorder
    sees no query. (curl 7.88 answers names under .localhost itself with loopback, no
    lookup at all: it fails on the client zone's empty loopback port, and asks no one
    either; on main's shim it passed this part too.)"""
    py_name = f"secret-py-{os.urandom(3).hex()}.localhost"
    curl_name = f"secret-curl-{os.urandom(3).hex()}.localhost"
    code = textwrap.dedent(f"""\
        import socket
        print(socket.getaddrinfo({py_name!r}, 80, socket.AF_INET,
                                 socket.SOCK_STREAM)[0][4][0])
        """)
    before = len(lab.dns.seen())
    via = [lab.hops[0].url, s5(lab.hops[1])]
    res = sk.run([sys.executable, "-c", code], via=via)
    assert res.returncode == 0 and res.stdout.strip().startswith("240."), sk.describe(res)
    res = sk.run(["curl", "-q", "-sS", "--max-time", "20", "-o", "/dev/null",
                  f"http://{curl_name}:{lab.http_port}/"], via=via)
    assert res.returncode != 0, sk.describe(res)     # nothing serves it
    assert_not_asked(lab, before, "secret-")


def test_res_search_judges_every_name_of_the_search_list(lab: lablib.Lab, sk,
                                                         dnscalls: Path,
                                                         tmp_path: Path) -> None:
    """A direct rule for a single-label name lets res_query() ask about it (the
    control), but res_search() of it would also ask about it under the search domain
    (LOCALDOMAIN), which the policy chains: the whole call is refused, and neither
    name reaches the resolver."""
    label = f"plain-{os.urandom(3).hex()}"
    pol = tmp_path / "policy.toml"
    pol.write_text(textwrap.dedent(f"""\
        [chains.c]
        hops = ["{lab.hops[0].url}", "{s5(lab.hops[1])}"]

        [[rules]]
        dest = ["{label}"]
        action = "direct"

        [default]
        action = "chain:c"
        """))
    env = {"LOCALDOMAIN": "corp.example"}
    before = len(lab.dns.seen())
    res = sk.run([str(dnscalls), "search", label], opts=["-c", str(pol)], env=env)
    assert res.returncode == 0, sk.describe(res)
    assert result_line(res.stdout, "search")[1:] == [
        "rc", "-1", "h_errno", str(NO_RECOVERY), "errno", str(EACCES)], sk.describe(res)
    assert f"res_search({label}.corp.example) refused" in res.stderr, res.stderr
    assert_not_asked(lab, before, label)
    res = sk.run([str(dnscalls), "query", label], opts=["-c", str(pol)], env=env)
    assert result_line(res.stdout, "query")[1:5] == [
        "rc", "-1", "h_errno", str(HOST_NOT_FOUND)], sk.describe(res)
    lablib.wait_until(lambda: label in lab.dns.seen(), 10, "the direct rule's query")
    assert f"{label}.corp.example" not in lab.dns.seen()

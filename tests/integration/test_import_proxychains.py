"""`socksify import-proxychains` on the lab chain: Debian's /etc/proxychains4.conf (its
[ProxyList] pointed at the lab's hops) and three hand-written files are converted,
the result passes `socksifyd check-config`, and one curl to the far server goes the
same way under proxychains4 -f FILE and under socksify -c CONVERTED: the same hops
(danted's logs), each asked for the same next address, the SOCKS5 hop given the same
user and password."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import lab as lablib
from conftest import Socksify, need
from pcsamples import samples
from socks5log import UserLoggingSocks5

pytestmark = pytest.mark.lab

DEBIAN = Path("/etc/proxychains4.conf")


@pytest.fixture
def s5(lab: lablib.Lab) -> Iterator[UserLoggingSocks5]:
    server = UserLoggingSocks5(lab)
    try:
        yield server
    finally:
        server.close()


def _files(lab: lablib.Lab, s5: UserLoggingSocks5) -> dict[str, str]:
    hops = [(h.host, h.port) for h in lab.hops]
    dead = tuple(lab.dead_hop_url.split("//")[1].split(":"))
    files = samples(hops, (lablib.PROXY_NEAR_IP, s5.port), (dead[0], int(dead[1])))
    if DEBIAN.is_file():
        head, sep, _ = DEBIAN.read_text().partition("[ProxyList]")
        assert sep, "Debian's proxychains4.conf has no [ProxyList]"
        files["debian"] = head + sep + "\n" + "".join(
            f"socks4 {h} {p}\n" for h, p in hops)
    return files


def _route(sk: Socksify, s5: UserLoggingSocks5, argv: list[str], marker: str
           ) -> tuple[list[list[str]], list[tuple[str, str, str]]]:
    """Run argv (curl to the far server, one request) in the client zone; the targets
    each danted hop was asked for, and the SOCKS5 hop's tunnels."""
    lab = sk.lab
    before = lab.hop_connects()
    tunnels = len(s5.tunnels)
    res = lab.client_run(argv, env=sk.env, timeout=60)
    assert res.returncode == 0 and len(lab.http.requests_for(marker)) == 1, \
        sk.describe(res)
    lablib.wait_until(lambda: sum(lab.hop_connects()) > sum(before) or s5.tunnels[
        tunnels:], 10, "a hop's log line")
    return lab.hop_targets_since(before), s5.tunnels[tunnels:]


@pytest.mark.parametrize("name", ["debian", "strict", "dynamic", "random"])
def test_converted_routes_like_proxychains(sk: Socksify, s5: UserLoggingSocks5,
                                           tmp_path: Path, name: str) -> None:
    need("proxychains4")
    need("curl")
    lab = sk.lab
    files = _files(lab, s5)
    if name not in files:
        pytest.skip("Debian's proxychains4.conf is missing")
    conf = tmp_path / f"{name}.conf"
    conf.write_text(files[name])
    policy = tmp_path / f"{name}.toml"
    conv = lablib.run([sk.install.socksify, "import-proxychains", str(conf), "-o",
                       str(policy)], env=sk.env)
    assert conv.returncode == 0, conv.describe()
    check = sk.socksifyd("check-config", "-c", str(policy))
    assert check.returncode == 0 and "ok" in check.stdout, check.describe()

    def curl(marker: str) -> list[str]:
        return ["curl", "-sf", "-o", "/dev/null", "--max-time", "20",
                lab.url("small.bin", marker)]

    pc_hops, pc_s5 = _route(sk, s5, ["proxychains4", "-q", "-f", str(conf),
                                     *curl(f"pc-{name}")], f"pc-{name}")
    sk_hops, sk_s5 = _route(sk, s5, [sk.install.socksify, "-q", "-c", str(policy),
                                     "--", *curl(f"sk-{name}")], f"sk-{name}")
    if name == "random":     # one hop of three, whichever: the far server from it
        for hops in (pc_hops, sk_hops):
            assert sorted(len(t) for t in hops) == [0, 0, 1], hops
            assert [t for t in hops if t] == [[lab.far_http_addr]], hops
        return
    assert sk_hops == pc_hops, (pc_hops, sk_hops)
    assert [t[:2] for t in sk_s5] == [t[:2] for t in pc_s5]
    if name == "strict":     # hop 1 -> hop 2 -> the SOCKS5 hop, as alice -> far
        assert pc_hops[:2] == [[lab.hop_addr(2)], [f"{lablib.PROXY_NEAR_IP}.{s5.port}"]]
        assert [t[:2] for t in sk_s5] == [("alice", "s3cr#t=x")]
    if name == "dynamic":    # the dead hop skipped: hop 1 -> hop 3 -> far
        assert pc_hops == [[lab.hop_addr(3)], [], [lab.far_http_addr]]
    if name == "debian":
        assert pc_hops == [[lab.hop_addr(2)], [lab.hop_addr(3)], [lab.far_http_addr]]
    assert not re.search(r"not converted", conv.stderr) or name == "strict"

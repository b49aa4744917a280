"""The proxychains.conf converter (`socksify import-proxychains`): Debian's own file
and three hand-written ones become policies the parser loads, with the chain type,
chain_len, DNS, timeouts, localnet rules and credentials carried over, a comment
naming each source line, and every line it cannot carry named."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pcsamples import samples
from socksify.errors import ConfigError
from socksify.policy import Policy
from socksify.proxies import SCHEMES
from socksify.proxychains import convert

from test_man import installed

DEBIAN = Path("/etc/proxychains4.conf")
S4 = [("192.0.2.1", 1081), ("192.0.2.2", 1082), ("192.0.2.3", 1083)]
S5 = ("192.0.2.5", 1085)
DEAD = ("192.0.2.9", 1089)


def _load(name: str) -> tuple[Policy, str, list[str]]:
    text = samples(S4, S5, DEAD)[name]
    result = convert(text, f"{name}.conf")
    return Policy.parse(result.toml, f"{name}.toml"), result.toml, result.unsupported


def test_debian_file() -> None:
    if not DEBIAN.is_file():
        pytest.skip("proxychains4 is not installed")
    result = convert(DEBIAN.read_text(), str(DEBIAN))
    pol = Policy.parse(result.toml, "debian.toml")
    chain = pol.chains["proxychains"]
    assert chain.strategy.value == "strict" and chain.dns == "remote"
    assert (chain.connect_timeout, chain.read_timeout) == (8.0, 15.0)
    assert [str(h) for h in chain.hops] == ["socks4a://127.0.0.1:9050"]
    assert pol.default.chain is chain
    assert "# line 18: strict_chain" in result.toml and result.unsupported == []


def test_strict_sample() -> None:
    pol, toml, unsupported = _load("strict")
    chain = pol.chains["proxychains"]
    assert chain.strategy.value == "strict" and chain.dns == "remote"
    assert (chain.connect_timeout, chain.read_timeout) == (6.0, 12.0)
    assert [str(h) for h in chain.hops] == [
        "socks4a://192.0.2.1:1081", "socks4a://someuser@192.0.2.2:1082",
        "socks5://alice@192.0.2.5:1085"]
    assert chain.hops[2].password == "s3cr#t=x"
    assert "s3cr" not in toml.split("hops = [")[1].split("\n", 2)[1].split("#", 1)[1]
    nets = [(r.networks, r.ports, r.action.kind) for r in pol.rules]
    assert [str(n[0][0]) for n in nets] == ["10.77.9.0/24", "10.77.8.0/24", "::1/128"]
    assert nets[1][1] == ((8080, 8080),) and {n[2] for n in nets} == {"direct"}
    named = "\n".join(unsupported)
    for word in ("strict.conf:3: quiet_mode", "strict.conf:12: dnat",
                 "strict.conf:13: socks_magic on"):
        assert word in named, named
    assert len(unsupported) == 3
    assert "# line 12: dnat 10.77.7.1:80 10.77.7.2:8080  -- NOT CONVERTED" in toml
    assert "# line 8: chain_len 3  -- ignored" in toml


def test_dynamic_sample() -> None:
    pol, toml, unsupported = _load("dynamic")
    chain = pol.chains["proxychains"]
    assert chain.strategy.value == "dynamic" and chain.dns == "local"
    assert (chain.connect_timeout, chain.read_timeout) == (3.0, 4.0)  # 4 s: default
    assert [str(h) for h in chain.hops] == [
        "socks4://192.0.2.9:1089", "socks4://192.0.2.1:1081", "socks4://192.0.2.3:1083"]
    assert unsupported == []


def test_proxy_types_without_a_hop() -> None:
    result = convert("[ProxyList]\nsocks4 192.0.2.1 1\nraw 192.0.2.2 80\n"
                     "http 192.0.2.3 3128 bob pw\nsocks4 192.0.2.4\n", "t.conf")
    hops = [str(h) for h in Policy.parse(result.toml, "t").chains["proxychains"].hops]
    named = "\n".join(result.unsupported)
    assert "t.conf:3: raw 192.0.2.2 80" in named and "t.conf:5: socks4 192.0.2.4" in named
    if "http" in SCHEMES:      # HTTP CONNECT hops exist on this build
        assert hops == ["socks4://192.0.2.1:1", "http://bob@192.0.2.3:3128"]
    else:
        assert hops == ["socks4://192.0.2.1:1"]
        assert "t.conf:4: http 192.0.2.3 3128 bob ***" in named and "pw" not in named


def test_random_sample() -> None:
    pol, toml, unsupported = _load("random")
    chain = pol.chains["proxychains"]
    assert chain.strategy.value == "random" and chain.chain_len == 1
    assert unsupported == [] and len(chain.hops) == 3


def test_defaults_and_refusals() -> None:
    result = convert("[ProxyList]\nsocks5 192.0.2.1 1080\n", "min.conf")
    chain = Policy.parse(result.toml, "min.toml").chains["proxychains"]
    assert chain.strategy.value == "dynamic" and chain.dns == "local"
    assert (chain.connect_timeout, chain.read_timeout) == (10.0, 4.0)
    result = convert("round_robin_chain\nchain_len = 5\n[ProxyList]\n"
                     "socks5 192.0.2.1 1080\nsocks5 192.0.2.2 1080\n", "rr.conf")
    chain = Policy.parse(result.toml, "rr.toml").chains["proxychains"]
    assert chain.strategy.value == "round_robin" and chain.chain_len == 2
    with pytest.raises(ConfigError, match="no usable proxy"):
        convert("strict_chain\n[ProxyList]\nraw 192.0.2.1 80\n", "none.conf")


def test_command_writes_and_names(tmp_path: Path) -> None:
    conf = tmp_path / "pc.conf"
    conf.write_text(samples(S4, S5, DEAD)["strict"])
    out = tmp_path / "pc.toml"
    socksify = installed("bin/socksify")
    res = subprocess.run([str(socksify), "import-proxychains", str(conf), "-o", str(out)],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and res.stdout == "", res.stderr
    assert res.stderr.count("not converted:") == 3
    check = subprocess.run([str(socksify.parent / "socksifyd"), "check-config", "-c",
                            str(out)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    res = subprocess.run([str(socksify), "import-proxychains", str(tmp_path / "no")],
                         capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and "No such file" in res.stderr

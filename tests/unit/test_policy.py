from pathlib import Path

import pytest

from socksify.chain import Strategy
from socksify.errors import ConfigError
from socksify.policy import Policy

GOOD = """\
# two hops, skip a dead one
[chains.anon]
hops = ["socks4://10.0.0.5:1080", "socks4a://alice@proxy2.example:1080"]
strategy = "dynamic"
connect_timeout = 3.5

[default]
action = "chain:anon"
"""


def test_good_policy(tmp_path: Path) -> None:
    f = tmp_path / "p.toml"
    f.write_text(GOOD)
    policy = Policy.load(f)
    anon = policy.chains["anon"]
    assert anon.strategy is Strategy.DYNAMIC and anon.connect_timeout == 3.5
    assert [str(h) for h in anon.hops][1] == "socks4a://alice@proxy2.example:1080"
    action = policy.decide("192.0.2.1", 443)
    assert action.kind == "chain" and action.chain is anon
    assert policy.source == str(f)


def test_default_is_block() -> None:
    assert Policy.parse("", "x.toml").decide("192.0.2.1", 80).kind == "block"


@pytest.mark.parametrize("text,line,words", [
    ("[chains.a]\nhops = [\"socks4://h:1\"]\nstrateg = \"strict\"\n", 3,
     "unknown key 'strateg'"),
    ("[chains.a]\nhops = [\"http://h:1\"]\n", 2, "unsupported proxy type"),
    ("[chains.a]\nhops = [\"socks4://h:1\"]\n[default]\naction = \"chain:b\"\n", 4,
     "names no chain"),
    ("[default]\naction = \"tunnel\"\n", 2, "unknown action"),
    ("[chains.a]\nhops = [\"socks4://h:1\"]\nstrategy = \"fastest\"\n", 3,
     "is not known"),
    ("[chains.a\n", 1, "not valid TOML"),
])
def test_errors_name_file_line_and_fix(text: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        Policy.parse(text, "/etc/x.toml")
    message = str(info.value)
    assert message.startswith(f"/etc/x.toml:{line}: "), message
    assert words in message

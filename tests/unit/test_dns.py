"""Stand-in addresses for remote DNS, and how the policy answers a name lookup."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from socksify.dns import Exhausted, FakeNames, hosts_file_names, normalize
from socksify.errors import ConfigError
from socksify.policy import Policy
from socksify.procinfo import AppInfo


def test_same_name_same_address_and_back() -> None:
    fake = FakeNames()
    a = fake.address_for("Example.ORG.")
    assert a == fake.address_for("example.org")
    assert a in ipaddress.ip_network("240.0.0.0/4") and fake.is_fake(a)
    assert fake.name_for(a) == "example.org"
    b = fake.address_for("other.test")
    assert b != a and fake.name_for(b) == "other.test"
    six = fake.address_for("example.org", 6)
    assert six.version == 6 and fake.is_fake(six) and fake.name_for(six) == "example.org"
    assert not fake.is_fake(ipaddress.ip_address("192.0.2.1"))
    assert fake.name_for(ipaddress.ip_address("240.0.0.200")) is None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_full_table_recycles_the_least_recently_used_once_old_enough() -> None:
    clock = Clock()
    fake = FakeNames("10.99.0.0/24", capacity=3, min_age=60, clock=clock)
    a, b, c = (fake.address_for(n) for n in ("a.test", "b.test", "c.test"))
    clock.now += 61
    fake.address_for("a.test")                  # a is now the most recent
    d = fake.address_for("d.test")              # b, the oldest, makes room
    assert d == b and fake.name_for(d) == "d.test"
    assert fake.name_for(a) == "a.test" and fake.name_for(c) == "c.test"
    assert len(fake) == 3


def test_a_recent_lookup_is_never_recycled() -> None:
    """The attack of issue 13 item 5: a full table must not give bank.example's
    address to the next name while a program may still hold it."""
    clock = Clock()
    fake = FakeNames("10.99.0.0/24", capacity=16, min_age=3600, clock=clock)
    bank = fake.address_for("bank.example")
    for i in range(15):
        fake.address_for(f"x{i}.attacker.example")
    clock.now += 3599
    with pytest.raises(Exhausted, match="16 stand-in addresses .* in use"):
        fake.address_for("x15.attacker.example")
    assert fake.name_for(bank) == "bank.example"
    assert fake.name_for(fake.address_for("x3.attacker.example")) == \
        "x3.attacker.example"


def test_a_connect_is_a_use_and_a_live_connection_holds() -> None:
    clock = Clock()
    fake = FakeNames("10.99.0.0/24", capacity=16, min_age=100, clock=clock)
    bank = fake.address_for("bank.example")
    others = [fake.address_for(f"x{i}.test") for i in range(15)]
    clock.now += 90
    entry = fake.use(bank)                      # connected (e.g. handed off)
    assert entry is not None and entry.name == "bank.example"
    clock.now += 20                             # the x* are 110 s old, bank 20 s
    first = fake.address_for("new1.test")
    assert first == others[0] and first != bank
    fake.hold(entry)                            # a relayed connection holds it
    clock.now += 1000                           # everything is old now
    taken = {fake.address_for(f"new{i}.test") for i in range(2, 17)}
    assert bank not in taken and fake.name_for(bank) == "bank.example"
    with pytest.raises(Exhausted, match="1 by live connections"):
        fake.address_for("one.more.test")
    fake.release(entry)                         # its end is a use: min_age from now
    with pytest.raises(Exhausted):
        fake.address_for("one.more.test")
    clock.now += 101                            # all old, bank the most recent
    assert fake.address_for("one.more.test") != bank
    assert fake.name_for(bank) == "bank.example"


def test_each_user_has_a_table_of_their_own() -> None:
    fake = FakeNames()
    a = fake.address_for("bank.example", 4, uid=1001)
    assert fake.name_for(a, 1001) == "bank.example"
    assert fake.name_for(a, 1002) is None and fake.use(a, 1002) is None
    b = fake.address_for("other.example", 4, uid=1002)
    assert b == a and fake.name_for(b, 1002) == "other.example"
    assert fake.name_for(a, 1001) == "bank.example"
    # the same name looked up by another user tells nothing of the first lookup
    fresh = FakeNames()
    assert fake.address_for("bank.example", 4, uid=1003) == \
        fresh.address_for("bank.example", 4, uid=1003)


def test_limits_in_dns_table() -> None:
    p = Policy.parse('[dns]\nrange4 = "10.99.0.0/24"\nmax_names = 200\n'
                     'min_age = 30\n', "p.toml")
    assert (p.dns_max_names, p.dns_min_age) == (200, 30.0)
    d = Policy.parse("", "p.toml")
    assert (d.dns_max_names, d.dns_min_age) == (65536, 3600.0)
    with pytest.raises(ConfigError, match=r"p.toml:3: dns.max_names 300 is more than "
                       r"the 254 stand-in addresses dns.range4"):
        Policy.parse('[dns]\nrange4 = "10.99.0.0/24"\nmax_names = 300\n', "p.toml")
    with pytest.raises(ConfigError, match=r"p.toml:2: dns.max_names 'many'"):
        Policy.parse('[dns]\nmax_names = "many"\n', "p.toml")
    with pytest.raises(ConfigError, match=r"p.toml:2: dns.min_age -1"):
        Policy.parse('[dns]\nmin_age = -1\n', "p.toml")


def test_hosts_file(tmp_path: Path) -> None:
    f = tmp_path / "hosts"
    f.write_text("127.0.0.1 localhost\n# 10.0.0.1 commented.test\n"
                 "10.0.0.2 build.lan Build-Alias  # trailing\n")
    assert hosts_file_names(f) == {"localhost", "build.lan", "build-alias"}
    assert hosts_file_names(tmp_path / "missing") == frozenset()
    assert normalize("A.B.") == "a.b"


def app(name: str) -> AppInfo:
    return AppInfo(1, name, f"/usr/bin/{name}", 1000, "alice", ())


POLICY = """\
[chains.anon]
hops = ["socks5://10.0.0.5:1080"]

[chains.legacy]
hops = ["socks4://10.0.0.6:1080"]
dns = "local"

[[rules]]
dest = ["*.lan"]
action = "direct"

[[rules]]
app = ["ssh"]
port = [22]
action = "direct"

[[rules]]
app = ["ssh"]
action = "chain:anon"

[[rules]]
app = ["old"]
action = "chain:legacy"

[[rules]]
app = ["secret"]
action = "chain:anon"
dns = "block"

[[rules]]
app = ["chat"]
action = "block"

[[rules]]
app = ["curl"]
action = "chain:anon"
"""


@pytest.mark.parametrize("who,name,verdict", [
    ("curl", "example.org", "remote"),       # proxied: a stand-in, no local query
    ("curl", "printer.lan", "local"),        # a direct rule for the name
    ("ssh", "host.example", "remote"),       # direct on port 22 only: still proxied
    ("old", "example.org", "local"),         # the chain says dns = "local"
    ("secret", "example.org", "block"),      # the rule says dns = "block"
    ("chat", "example.org", "block"),        # blocked app: no lookup at all
    ("other", "example.org", "block"),       # default block
])
def test_name_decisions(who: str, name: str, verdict: str) -> None:
    policy = Policy.parse(POLICY, "p.toml")
    assert policy.decide_name(app(who), name).verdict == verdict


def test_via_chain_resolves_remotely() -> None:
    from socksify.chains import ChainSpec
    from socksify.proxies import Proxy
    spec = ChainSpec("via", (Proxy.parse("socks4a://10.0.0.1:1080"),))
    assert Policy.single_chain(spec).decide_name(None, "x.test").verdict == "remote"


@pytest.mark.parametrize("text,line,words", [
    ('[dns]\nrange4 = "10.0.0.0/30"\n', 2, "at least 256"),
    ('[dns]\nrange4 = "fd00::/64"\n', 2, "not an IPv4 network"),
    ('[dns]\nrange = "10.0.0.0/8"\n', 2, "unknown key 'range'"),
    ('[chains.a]\nhops = ["socks4://h:1"]\ndns = "maybe"\n', 3, "is not known"),
    ('[[rules]]\naction = "direct"\ndns = "local"\n', 3, "chain actions only"),
])
def test_dns_errors(text: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        Policy.parse(text, "p.toml")
    assert str(info.value).startswith(f"p.toml:{line}: ") and words in str(info.value)


def test_socks4_only_chain_refuses_names_with_the_reason() -> None:
    from socksify.chains import ChainSpec, Strategy
    from socksify.proxies import Proxy
    s4, s5 = Proxy.parse("socks4://10.0.0.1:1080"), Proxy.parse("socks5://10.0.0.2:1080")
    decision = Policy.single_chain(ChainSpec("via", (s5, s4))).decide_name(None, "x.test")
    assert decision.verdict == "block" and "cannot carry host names" in decision.why
    # strict: only the last hop matters; dynamic: any hop may end up last
    assert ChainSpec("a", (s4, s5)).carries_names
    assert not ChainSpec("a", (s4, s5), Strategy.DYNAMIC).carries_names
    local = ChainSpec("via", (s4,), dns="local")
    assert Policy.single_chain(local).decide_name(None, "x.test").verdict == "local"
    warned = Policy.parse('[chains.old]\nhops = ["socks4://10.0.0.1:1080"]\n', "p.toml")
    assert warned.warnings and warned.warnings[0].startswith("p.toml:1: chain old")

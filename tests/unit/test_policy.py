"""The policy engine: parsing with file:line errors, rule matching (first match wins),
each matcher, the default, and warnings for rules that can never match."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from socksify.chains import Strategy
from socksify.errors import ConfigError
from socksify.policy import Policy
from socksify.procinfo import AppInfo

GOOD = """\
[proxies]
exit1 = "socks4://10.0.0.5:1080"

[chains.anon]   # two hops, skip a dead one
hops = ["exit1", "socks4a://alice@proxy2.example:1080"]
strategy = "dynamic"
connect_timeout = 3.5

[chains.work]
hops = ["socks4://10.9.0.1:1080"]

[[rules]]
name = "lan"
dest = ["192.168.0.0/16", "10.0.0.0/8"]
action = "direct"

[[rules]]
app = ["irssi", "/opt/chat/*"]
action = "block"

[[rules]]
user = ["svc", 1234]
port = [22, "8000-8999"]
action = "chain:work"

[[rules]]
parent = ["tmux*"]
dest = ["*.example.org"]
action = "direct"

[[rules]]
app = ["curl", "wget"]
action = "chain:anon"

[default]
action = "block"
"""


def app(name: str = "curl", exe: str = "/usr/bin/curl", uid: int = 1000,
        user: str = "alice", ancestors: tuple[tuple[str, str], ...] = ()) -> AppInfo:
    return AppInfo(4242, name, exe, uid, user, ancestors)


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.fixture
def policy(tmp_path: Path) -> Policy:
    f = tmp_path / "p.toml"
    f.write_text(GOOD)
    return Policy.load(f)


def test_chains_and_named_proxies(policy: Policy) -> None:
    anon = policy.chains["anon"]
    assert anon.strategy is Strategy.DYNAMIC and anon.connect_timeout == 3.5
    assert [str(h) for h in anon.hops] == ["socks4://10.0.0.5:1080",
                                           "socks4a://alice@proxy2.example:1080"]
    assert len(policy.rules) == 5 and policy.needs_app


def test_first_match_wins(policy: Policy) -> None:
    # curl to the LAN: the lan rule comes before the curl rule
    d = policy.decide(app(), ip("192.168.1.7"), 80)
    assert (str(d.action), d.rule) == ("direct", "lan")
    d = policy.decide(app(), ip("198.51.100.1"), 443)
    assert str(d.action) == "chain:anon" and d.rule == "rule 5 (line 31)"


def test_app_by_name_and_by_exe_glob(policy: Policy) -> None:
    assert str(policy.decide(app("irssi", "/usr/bin/irssi"), ip("198.51.100.1"),
                             6697).action) == "block"
    assert str(policy.decide(app("chat", "/opt/chat/bin/chat"), ip("198.51.100.1"),
                             443).action) == "block"
    # the executable's base name counts as the name too (python3 vs python3.11)
    assert str(policy.decide(app("wget-x", "/usr/bin/wget"), ip("198.51.100.1"),
                             80).action) == "chain:anon"


def test_user_by_name_or_uid_with_ports(policy: Policy) -> None:
    svc = app("backup", "/usr/local/bin/backup", uid=999, user="svc")
    assert str(policy.decide(svc, ip("198.51.100.1"), 22).action) == "chain:work"
    assert str(policy.decide(svc, ip("198.51.100.1"), 8443).action) == "chain:work"
    assert str(policy.decide(svc, ip("198.51.100.1"), 9000).action) == "block"
    by_uid = app("backup", "/usr/local/bin/backup", uid=1234, user="bob")
    assert str(policy.decide(by_uid, ip("198.51.100.1"), 22).action) == "chain:work"


def test_parent_and_host_glob(policy: Policy) -> None:
    child = app("python3", "/usr/bin/python3.11",
                ancestors=(("bash", "/usr/bin/bash"), ("tmux: server", "/usr/bin/tmux")))
    d = policy.decide(child, ip("198.51.100.1"), 443, host="www.example.org")
    assert str(d.action) == "direct"
    # no host name known: the host glob cannot match, so the rule does not apply
    assert policy.decide(child, ip("198.51.100.1"), 443).rule == "default"
    # not under tmux
    orphan = app("python3", "/usr/bin/python3.11", ancestors=(("bash", "/bin/bash"),))
    assert policy.decide(orphan, ip("198.51.100.1"), 443, "www.example.org").rule == \
        "default"


def test_unknown_process_only_matches_rules_without_app_keys(policy: Policy) -> None:
    assert str(policy.decide(None, ip("10.1.2.3"), 80).action) == "direct"
    assert str(policy.decide(None, ip("198.51.100.1"), 80).action) == "block"


def test_ipv4_mapped_destination_matches_ipv4_cidr(policy: Policy) -> None:
    assert policy.decide(None, ip("::ffff:10.1.2.3"), 80).rule == "lan"


def test_default_is_block_when_absent() -> None:
    d = Policy.parse("", "x.toml").decide(None, ip("192.0.2.1"), 80)
    assert d.action.kind == "block" and d.rule == "default"


@pytest.mark.parametrize("text,line,words", [
    ('[chains.a]\nhops = ["socks4://h:1"]\nstrateg = "strict"\n', 3,
     "unknown key 'strateg'"),
    ('[chains.a]\nhops = ["ftp://h:1"]\n', 2, "unsupported proxy type"),
    ('[chains.a]\nhops = ["nosuchproxy"]\n', 2, "no scheme"),
    ('[chains.a]\nhops = ["socks4://h:1"]\n[default]\naction = "chain:b"\n', 4,
     "names no chain"),
    ('[default]\naction = "tunnel"\n', 2, "unknown action"),
    ('[chains.a]\nhops = ["socks4://h:1"]\nstrategy = "fastest"\n', 3, "is not known"),
    ("[chains.a\n", 1, "not valid TOML"),
    ('[[rules]]\naction = "direct"\n\n[[rules]]\nap = ["curl"]\naction = "block"\n', 5,
     "unknown key 'ap' in rule 2"),
    ('[[rules]]\napp = ["curl"]\n', 1, "rule 1 has no action"),
    ('[[rules]]\ndest = ["10.0.0.0/33"]\naction = "direct"\n', 2,
     "neither an address, a CIDR block nor a host-name glob"),
    ('[[rules]]\nport = ["90-80"]\naction = "direct"\n', 2, "empty range"),
    ('[[rules]]\nport = [0]\naction = "direct"\n', 2, "outside 1..65535"),
    ('[[rules]]\nuser = [true]\naction = "direct"\n', 2, "user names or uids"),
    ('[[rules]]\naction = "chain:x"\n', 2, "names no chain"),
    ('[colours]\nred = 1\n', 1, "unknown table or key 'colours'"),
    ('[daemon]\nallow = ["bob"]\n', 2, "unknown key 'allow' in [daemon]"),
    ('[proxies]\np1 = "socks6://h:1"\n', 2, "proxies.p1"),
    ('[proxies]\np = "socks4://h:1"\nq = { url = "http://h:1", tls_verify = false }\n', 3,
     "not a TLS hop"),
    ('[proxies]\np = { url = "https://h:1", ca_file = "/nonexistent/ca.pem" }\n', 2,
     "cannot be loaded"),
    ('[proxies]\np = { url = "https://h:1", verify = false }\n', 2, "unknown key"),
    ('[proxies]\np = { url = "https://h:1", tls_verify = "no" }\n', 2, "true or false"),
    ('[chains.a]\nhops = ["http://u:p%0D%0AX@h:1"]\n', 2, "line break"),
])
def test_errors_name_file_line_and_fix(text: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        Policy.parse(text, "/etc/x.toml")
    message = str(info.value)
    assert message.startswith(f"/etc/x.toml:{line}: "), message
    assert words in message
    assert "hint:" in message or "not valid TOML" in message or "proxies." in message


def test_shadowed_rules_are_warned_about() -> None:
    text = """\
[[rules]]
dest = ["10.0.0.0/8"]
action = "direct"

[[rules]]
dest = ["10.1.0.0/16"]
port = [80]
action = "block"

[[rules]]
app = ["curl"]
action = "block"

[[rules]]
app = ["curl"]
port = [443]
action = "direct"

[[rules]]
port = [443]
action = "direct"
"""
    policy = Policy.parse(text, "p.toml")
    assert len(policy.warnings) == 2, policy.warnings
    assert policy.warnings[0].startswith("p.toml:5: rule 2 (line 5) can never match: "
                                         "rule 1 (line 1)")
    assert "rule 4 (line 14)" in policy.warnings[1] and "rule 3" in policy.warnings[1]


def test_catch_all_rule_shadows_everything_after_it() -> None:
    text = '[[rules]]\naction = "direct"\n[[rules]]\napp = ["x"]\naction = "block"\n'
    assert len(Policy.parse(text, "p.toml").warnings) == 1


def test_allow_users() -> None:
    p = Policy.parse('[daemon]\nallow_users = ["bob", 1001]\n', "p.toml")
    assert p.allow_users == ("bob", 1001)


def test_example_policies_load_through_the_real_loader() -> None:
    """Every commented example in docs/policies/ is a valid policy with no warnings."""
    examples = sorted((Path(__file__).resolve().parents[2] / "docs" / "policies")
                      .glob("*.toml"))
    assert len(examples) >= 4
    for path in examples:
        policy = Policy.load(path)
        assert policy.rules and not policy.warnings, (path, policy.warnings)


@pytest.mark.parametrize("action,udp,direct", [
    ("direct", "", True), ("direct", "refuse", False), ("chain:c", "", False),
    ("chain:c", "direct", True), ("block", "", False), ("block", "direct", False)])
def test_udp_per_rule(action: str, udp: str, direct: bool) -> None:
    key = f'udp = "{udp}"\n' if udp else ""
    p = Policy.parse('[chains.c]\nhops = ["socks5://10.0.0.1:1080"]\n'
                     f'[[rules]]\nport = [53]\naction = "{action}"\n{key}', "p.toml")
    assert p.decide(None, ip("192.0.2.53"), 53).udp_direct is direct


def test_udp_chain_is_for_chain_rules() -> None:
    """udp = "chain" carries datagrams through the chain (never directly); on a rule
    without a chain it is an error at its line."""
    p = Policy.parse('[chains.c]\nhops = ["socks5://10.0.0.1:1080"]\n'
                     '[[rules]]\naction = "chain:c"\nudp = "chain"\n', "p.toml")
    decision = p.decide(None, ip("192.0.2.53"), 53)
    assert decision.udp == "chain" and not decision.udp_direct
    with pytest.raises(ConfigError) as info:
        Policy.parse('[[rules]]\naction = "direct"\nudp = "chain"\n', "p.toml")
    assert str(info.value).startswith("p.toml:3: ") and "chain action" in str(info.value)


def test_udp_bad_value() -> None:
    with pytest.raises(ConfigError) as info:
        Policy.parse('[[rules]]\naction = "direct"\nudp = "tunnel"\n', "p.toml")
    assert str(info.value).startswith("p.toml:3: ") and "refuse | direct" in str(info.value)


REVERSE = """\
[chains.c]
hops = ["socks5://10.0.0.1:1080"]

[[rules]]
dest = ["192.0.2.0/24"]
port = [443]
action = "chain:c"

[[rules]]
dest = ["192.0.2.0/24", "198.51.100.0/24"]
action = "direct"

[[rules]]
app = ["ssh"]
dest = ["203.0.113.0/24"]
action = "block"

[default]
action = "direct"
"""


@pytest.mark.parametrize("who,addr,kind,rule", [
    # a chain on one port of the address makes its reverse lookup not direct
    ("curl", "192.0.2.9", "chain", "rule 1 (line 4)"),
    ("curl", "198.51.100.9", "direct", "rule 2 (line 9)"),
    ("ssh", "203.0.113.5", "block", "rule 3 (line 13)"),
    ("curl", "203.0.113.5", "direct", "default"),
    ("curl", "::ffff:198.51.100.9", "direct", "rule 2 (line 9)"),
])
def test_decide_address_counts_every_port(who: str, addr: str, kind: str,
                                          rule: str) -> None:
    p = Policy.parse(REVERSE, "p.toml")
    d = p.decide_address(app(who, f"/usr/bin/{who}"), ip(addr))
    assert (d.action.kind, d.rule) == (kind, rule)
    # decide() on port 0, which no port rule matches, would have said direct
    assert p.decide(app(who, f"/usr/bin/{who}"), ip("192.0.2.9"), 0).action.kind == "direct"


@pytest.mark.parametrize("pattern,name,exe,windows,matched", [
    ("curl", "curl.exe", r"C:\Tools\curl.exe", True, True),       # no .exe needed
    ("CURL.EXE", "curl.exe", r"C:\Tools\curl.exe", True, True),   # any case
    ("C:/tools/*", "curl.exe", r"C:\Tools\curl.exe", True, True),  # either slash
    (r"C:\Tools\git*", "curl.exe", r"C:\Tools\curl.exe", True, False),
    ("curl", "curl.exe", "/opt/curl.exe", False, False),          # Linux: exact
    ("curl", "curl", "/usr/bin/curl", False, True),
])
def test_windows_program_names(pattern: str, name: str, exe: str, windows: bool,
                               matched: bool) -> None:
    """On Windows, app patterns compare as Windows names do; elsewhere exactly."""
    from socksify.policy.rules import _app_match
    assert _app_match(pattern, name, exe, windows=windows) is matched


RENAMED = """\
[chains.c]
hops = ["socks5://10.0.0.1:1080"]

[[rules]]
app = ["ssh"]
action = "direct"

[[rules]]
comm = ["backup-agent"]
action = "direct"

[[rules]]
parent = ["sshd"]
action = "chain:c"

[default]
action = "block"
"""


def test_app_matches_the_executable_not_the_name_a_program_gives_itself() -> None:
    """Issue 13 item 10: a program that calls itself "ssh" (prctl(PR_SET_NAME),
    argv[0]) does not get the ssh rule; the real ssh (or a file named ssh) does."""
    p = Policy.parse(RENAMED, "p.toml")
    dst = ip("198.51.100.1")
    liar = app("ssh", "/usr/bin/python3.11")
    assert p.decide(liar, dst, 22).rule == "default"
    assert p.decide(app("ssh", "/usr/bin/ssh"), dst, 22).rule == "rule 1 (line 4)"
    assert p.decide(app("anything", "/usr/bin/ssh"), dst, 22).rule == "rule 1 (line 4)"
    # comm is matched only where a rule asks for it, and is what the program says
    assert p.decide(app("backup-agent", "/usr/bin/python3.11"), dst, 22).rule == \
        "rule 2 (line 8)"
    # parent: the ancestor's executable, not its name
    fake_parent = app("curl", "/usr/bin/curl",
                      ancestors=(("sshd", "/usr/bin/python3.11"),))
    assert p.decide(fake_parent, dst, 22).rule == "default"
    real_parent = app("curl", "/usr/bin/curl", ancestors=(("sshd", "/usr/sbin/sshd"),))
    assert p.decide(real_parent, dst, 22).rule == "rule 3 (line 12)"
    # an unreadable executable matches no app rule
    assert p.decide(app("ssh", ""), dst, 22).rule == "default"


@pytest.mark.parametrize("pattern,name,exe,windows,matched", [
    ("ssh", "ssh", "/usr/bin/python3.11", False, False),   # Linux: never the name
    ("ssh", "ssh", "/usr/bin/python3.11", True, True),     # Windows: the image name
])
def test_the_name_counts_on_windows_only(pattern: str, name: str, exe: str,
                                         windows: bool, matched: bool) -> None:
    from socksify.policy.rules import _app_match
    assert _app_match(pattern, name, exe, windows=windows) is matched


def test_comm_and_script_names_are_warned_about() -> None:
    p = Policy.parse(RENAMED + '\n[[rules]]\napp = ["tool.py"]\naction = "block"\n',
                     "p.toml")
    text = "\n".join(p.warnings)
    assert "p.toml:8: rule 2 (line 8): comm matches the name a program gives itself" \
        in text
    assert "'tool.py' looks like a script" in text
    with pytest.raises(ConfigError, match="rule 1.comm"):
        Policy.parse('[[rules]]\ncomm = 5\naction = "block"\n', "p.toml")


def test_chain_pipeline_key() -> None:
    """pipeline = true | false per chain (default true); anything else is an error at
    its line."""
    head = '[chains.c]\nhops = ["socks4://10.0.0.1:1080"]\n'
    assert Policy.parse(head, "p.toml").chains["c"].pipeline is True
    assert Policy.parse(head + "pipeline = false\n", "p.toml").chains["c"].pipeline \
        is False
    for bad in ('"no"', "1", "0"):
        with pytest.raises(ConfigError) as info:
            Policy.parse(head + "\n" + f"pipeline = {bad}\n", "p.toml")
        assert str(info.value).startswith("p.toml:4: ") and \
            "pipeline must be true or false" in str(info.value), str(info.value)
def test_tls_proxy_table() -> None:
    policy = Policy.parse('[proxies]\ntp = { url = "https://h.example:443", '
                          'tls_verify = false }\n[chains.c]\nhops = ["tp", '
                          '"http://u:p@h2:3128"]\n', "p.toml")
    tp, h2 = policy.chains["c"].hops
    assert tp.tls and not tp.tls_verify and tp.ca_file is None
    assert h2.protocol == "http" and h2.tls_verify and not h2.tls
    # a TLS session lives in the daemon: such a chain is relayed
    assert policy.chains["c"].data_path == "relay"

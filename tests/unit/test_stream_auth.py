"""Stream isolation credentials (chains/streamauth.py): one user name per key, other
keys other names, a fresh secret other names; no digit (so no pid) in clear; and the
policy's isolate key."""

from __future__ import annotations

import pytest

from socksify.chains.streamauth import derive, stream_key
from socksify.errors import ConfigError
from socksify.policy import Policy


def test_same_key_same_credentials_other_key_other() -> None:
    a = stream_key("process", "tor", 1000, 4242, b"9876", "/usr/bin/curl", "c1")
    again = stream_key("process", "tor", 1000, 4242, b"9876", "/usr/bin/curl", "c1")
    b = stream_key("process", "tor", 1000, 4243, b"9876", "/usr/bin/curl", "c1")
    assert a is not None and again is not None and b is not None
    first, second = derive(a), derive(again)      # two derivations of one key
    assert first.user == second.user and first.password == second.password
    assert first.user != derive(b).user and first.password != derive(b).password


def test_modes_pick_their_key() -> None:
    args = ("tor", 1000, 4242, b"1", "/usr/bin/curl")
    assert stream_key("none", *args, "c1") is None
    # app: the pid and the connection do not matter
    assert stream_key("app", *args, "c1") == stream_key("app", "tor", 1000, 7, b"2",
                                                       "/usr/bin/curl", "c9")
    # process: a reused pid (another start time) is another process
    assert stream_key("process", *args, "c1") != stream_key(
        "process", "tor", 1000, 4242, b"2", "/usr/bin/curl", "c1")
    assert stream_key("process", *args, "c1") == stream_key(
        "process", "tor", 1000, 4242, b"1", "/usr/bin/curl", "c2")
    assert stream_key("connection", *args, "c1") != stream_key("connection", *args,
                                                               "c2")
    # another chain, another name
    assert stream_key("app", *args, "c1") != stream_key("app", "tor2", *args[1:], "c1")


def test_no_pid_or_name_in_clear_and_secret_per_start() -> None:
    for pid in (1, 42, 4242, 123456):
        key = stream_key("process", "tor", 0, pid, b"77", "/usr/bin/curl", "c")
        assert key is not None
        auth = derive(key)
        assert auth.user.startswith("sk") and len(auth.user) == 26
        assert not any(c.isdigit() for c in auth.user + auth.password)
        assert "curl" not in auth.user and auth.password not in repr(auth)
        assert 1 <= len(auth.user.encode()) <= 255
    key = "process\0tor\x000\x0042\x0077"
    assert derive(key, b"a" * 32) != derive(key, b"b" * 32)


def test_policy_isolate_key() -> None:
    pol = Policy.parse('[chains.tor]\nhops = ["socks5://127.0.0.1:9050"]\n'
                       'isolate = "process"\n[default]\naction = "chain:tor"\n', "t")
    assert pol.chains["tor"].isolate == "process"
    assert Policy.parse('[chains.a]\nhops = ["socks5://127.0.0.1:9050"]\n',
                        "t").chains["a"].isolate == "none"
    with pytest.raises(ConfigError) as err:
        Policy.parse('[chains.tor]\nhops = ["socks5://127.0.0.1:9050"]\n'
                     'isolate = "thread"\n', "t")
    assert "isolate" in str(err.value) and ":3" in str(err.value)


def test_prebuilt_pool_only_where_isolation_is_at_the_last_hop() -> None:
    pol = Policy.parse('[chains.last]\nhops = ["socks4://10.0.0.1:1", '
                       '"socks5://10.0.0.2:9050"]\nisolate = "connection"\nprebuilt = 2\n'
                       '[chains.first]\nhops = ["socks5://10.0.0.2:9050", '
                       '"socks4://10.0.0.1:1"]\nisolate = "connection"\nprebuilt = 2\n'
                       '[chains.written]\nhops = ["socks5://u:p@10.0.0.2:9050", '
                       '"socks4://10.0.0.1:1"]\nisolate = "app"\nprebuilt = 2\n', "t")
    assert not pol.chains["last"].isolated_before_last
    assert pol.chains["first"].isolated_before_last
    assert not pol.chains["written"].isolated_before_last


def test_hops_that_cannot_be_isolated_are_logged(caplog: pytest.LogCaptureFixture
                                                 ) -> None:
    from socksify.core.sessions import _say_isolation
    pol = Policy.parse('[chains.mix]\nhops = ["socks4://10.0.0.1:1", '
                       '"socks5://u:p@10.0.0.2:2", "socks5://10.0.0.3:3"]\n'
                       'isolate = "app"\n', "t")
    with caplog.at_level("INFO", logger="socksify.daemon"):
        _say_isolation(pol.chains["mix"])
    text = caplog.text
    assert "socks4://10.0.0.1:1 is socks4: no stream isolation" in text
    assert "socks5://u@10.0.0.2:2 keeps its written credentials" in text
    assert "10.0.0.3" not in text


def test_unknown_program_is_isolated_per_connection() -> None:
    from socksify.core.records import Connection
    from socksify.core.streams import stream_auth
    from socksify.procinfo import AppInfo
    pol = Policy.parse('[chains.tor]\nhops = ["socks5://127.0.0.1:9050"]\n'
                       'isolate = "app"\n', "t")
    app = AppInfo(0, "uid 1000 (127.0.0.1:5555)", "", 1000, "u", ())
    known = AppInfo(4242, "curl", "/usr/bin/curl", 1000, "u", ())
    auth = [stream_auth(Connection(f"c{i}", a, None, 80, 0.0), pol.chains["tor"])
            for i, a in enumerate((app, app, known, known))]
    assert auth[0] != auth[1] and auth[2] == auth[3] and auth[0] is not None

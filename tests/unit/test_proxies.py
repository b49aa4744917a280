import pytest

from socksify.errors import ConfigError
from socksify.proxies import Proxy


@pytest.mark.parametrize("url,expected", [
    ("socks4://10.0.0.5:1080", Proxy("socks4", "10.0.0.5", 1080)),
    ("SOCKS4://10.0.0.5:1080/", Proxy("socks4", "10.0.0.5", 1080)),
    ("socks4a://alice@proxy2.example:1080", Proxy("socks4a", "proxy2.example", 1080,
                                                  "alice")),
    ("socks4://a%40b@h:9", Proxy("socks4", "h", 9, "a@b")),
])
def test_parse(url: str, expected: Proxy) -> None:
    assert Proxy.parse(url) == expected


def test_str_roundtrips() -> None:
    for url in ("socks4://10.0.0.5:1080", "socks4a://alice@proxy2.example:1080"):
        assert str(Proxy.parse(url)) == url


@pytest.mark.parametrize("url,words", [
    ("10.0.0.5:1080", "no scheme"),
    ("ftp://10.0.0.5:3128", "unsupported proxy type"),
    ("http://:pw@10.0.0.5:3128", "a password needs a user"),
    ("socks4://10.0.0.5", "needs a host and a port"),
    ("socks4://10.0.0.5:99999", "port"),
    ("socks4://u:pw@10.0.0.5:1080", "no password"),
    ("socks5://:pw@10.0.0.5:1080", "a password needs a user"),
    ("socks4://10.0.0.5:1080/path", "no path"),
])
def test_parse_errors_say_what_and_how(url: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        Proxy.parse(url)
    assert words in str(info.value)
    assert "socks4://HOST:PORT" in str(info.value)  # the hint


def test_socks5_with_credentials_hides_the_password() -> None:
    p = Proxy.parse("socks5://bob:s%40cret@10.0.0.9:1080")
    assert (p.scheme, p.user, p.password) == ("socks5", "bob", "s@cret")
    assert str(p) == "socks5://bob@10.0.0.9:1080" and "cret" not in repr(p)
    assert p.carries_names and p.carries_ipv6


def test_password_is_never_echoed_in_errors() -> None:
    with pytest.raises(ConfigError) as info:
        Proxy.parse("socks4://bob:hunter2@10.0.0.5:1080")
    assert "hunter2" not in str(info.value) and "***" in str(info.value)


def test_ipv6_literal_hop() -> None:
    p = Proxy.parse("socks5://[2001:db8::5]:1080")
    assert p.host == "2001:db8::5" and str(p) == "socks5://[2001:db8::5]:1080"


def test_http_and_tls_hops() -> None:
    p = Proxy.parse("http://alice:s%3Ac@proxy.example:3128")
    assert (p.protocol, p.tls, p.user, p.password) == ("http", False, "alice", "s:c")
    assert p.carries_names and p.carries_ipv6
    assert str(p) == "http://alice@proxy.example:3128"
    assert Proxy.parse("https://proxy.example:443").tls
    s = Proxy.parse("socks5+tls://u:p@10.0.0.1:1080")
    assert (s.protocol, s.tls) == ("socks5", True)

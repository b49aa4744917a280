"""`socksify import-proxychains FILE [-o OUT]`: a proxychains.conf (proxychains-ng
4.x) as a socksify policy. One chain, `proxychains`, holds the [ProxyList] in order;
the chain type becomes its strategy (strict_chain -> strict, dynamic_chain ->
dynamic, random_chain -> random, round_robin_chain -> round_robin; chain_len for the
last two); proxy_dns -> dns = "remote" (without it proxychains resolves with the libc:
dns = "local"); tcp_connect_time_out / tcp_read_time_out (ms) -> connect_timeout /
read_timeout (s); each localnet -> a `direct` rule; the default action is the chain.
Where a setting is absent, proxychains' own default is written (dynamic, chain_len 1,
4 s read, 10 s connect, local DNS). Every setting carries a comment naming its line.
Lines with no socksify equivalent (dnat, raw proxies, quiet_mode, unknown options)
are named on stderr and left as comments; the result is checked by the policy parser
before it is written."""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from .errors import ConfigError
from .proxies import SCHEMES

CHAIN = "proxychains"
STRATEGIES = {"strict_chain": "strict", "dynamic_chain": "dynamic",
              "random_chain": "random", "round_robin_chain": "round_robin"}
DEFAULT_READ_MS, DEFAULT_CONNECT_MS = 4000, 10000


@dataclass
class Converted:
    toml: str
    unsupported: list[str] = field(default_factory=list)   # "FILE:N: why"


@dataclass
class _State:
    source: str
    strategy: tuple[str, int | None] = ("dynamic", None)   # value, line
    chain_len: tuple[int, int | None] = (1, None)
    dns: tuple[str, int | None] = ("local", None)
    read_ms: tuple[int, int | None] = (DEFAULT_READ_MS, None)
    connect_ms: tuple[int, int | None] = (DEFAULT_CONNECT_MS, None)
    hops: list[tuple[str, int, str]] = field(default_factory=list)  # url, line, text
    localnets: list[tuple[str, int | None, int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)     # comment lines, in file order
    texts: dict[int, str] = field(default_factory=dict)  # line -> as shown
    unsupported: list[str] = field(default_factory=list)

    def skip(self, n: int, text: str, why: str) -> None:
        self.unsupported.append(f"{self.source}:{n}: {text}: {why}")
        self.notes.append(f"# line {n}: {text}  -- NOT CONVERTED: {why}")

    def note(self, n: int, text: str, why: str) -> None:
        self.notes.append(f"# line {n}: {text}  -- {why}")


def _shown(words: list[str]) -> str:
    """A source line as a comment shows it: a proxy's password hidden, no control
    characters."""
    if len(words) >= 5 and words[0].lower() in ("socks4", "socks5", "http", "raw"):
        words = [*words[:4], "***", *words[5:]]
    return re.sub(r"[\x00-\x1f\x7f]", "?", " ".join(words))


def _number(n: int, words: list[str], st: _State) -> int | None:
    value = words[1] if len(words) > 1 else ""
    if not value.isdigit() or int(value) <= 0:
        st.skip(n, _shown(words), "expected a positive whole number")
        return None
    return int(value)


def _hop(n: int, words: list[str], st: _State) -> None:
    text = _shown(words)
    kind = words[0].lower()
    if len(words) < 3 or not words[2].isdigit():
        st.skip(n, text, "a proxy line is TYPE HOST PORT [USER [PASS]]")
        return
    if kind not in ("socks4", "socks5", "http"):
        st.skip(n, text, f"proxy type {words[0]!r} has no socksify hop")
        return
    if kind not in SCHEMES:
        st.skip(n, text, f"this socksify has no {kind}:// hops")
        return
    host, port = words[1], words[2]
    user = words[3] if len(words) > 3 else ""
    password = words[4] if len(words) > 4 else ""
    if kind == "socks4" and password:
        st.note(n, text, "SOCKS4 sends a user id only: the password is dropped")
        password = ""
    cred = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    host = f"[{host}]" if ":" in host else host
    st.hops.append((f"{kind}://{cred + '@' if cred else ''}{host}:{port}", n, text))


def _localnet(n: int, words: list[str], st: _State) -> None:
    """localnet ADDR[:PORT]/MASK, [ADDR6]:PORT/PREFIX or ADDR6/PREFIX."""
    text = _shown(words)
    spec = words[1] if len(words) == 2 else ""
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?/(\d+)", spec) or \
        re.fullmatch(r"([0-9.]+)(?::(\d+))?/([0-9.]+)", spec) or \
        re.fullmatch(r"([0-9A-Fa-f:]*:[0-9A-Fa-f:.]*)()/(\d+)", spec)
    try:
        if not m:
            raise ValueError
        net = ipaddress.ip_network(f"{m.group(1)}/{m.group(3)}", strict=False)
        port = int(m.group(2)) if m.group(2) else None
        if port is not None and not 1 <= port <= 65535:
            raise ValueError
    except ValueError:
        st.skip(n, text, "expected localnet ADDR[:PORT]/NETMASK")
        return
    st.localnets.append((str(net), port, n, text))


def parse(text: str, source: str) -> _State:
    st = _State(source)
    in_list = False
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not in_list:      # a proxy line keeps its '#': it may be in a password
            line = line.split("#", 1)[0].strip()
        if line.lower() == "[proxylist]":
            in_list = True
            continue
        words = line.replace("=", " ").split() if not in_list else line.split()
        key = words[0].lower()
        shown = st.texts[n] = _shown(words)
        if in_list:
            _hop(n, words, st)
        elif key in STRATEGIES and len(words) == 1:
            st.strategy = (STRATEGIES[key], n)
        elif key == "chain_len":
            value = _number(n, words, st)
            if value is not None:
                st.chain_len = (value, n)
        elif key in ("proxy_dns", "proxy_dns_old") and len(words) == 1:
            st.dns = ("remote", n)
        elif key == "proxy_dns_daemon":
            st.dns = ("remote", n)
            st.note(n, shown, "the daemon resolves names through the chain itself")
        elif key == "remote_dns_subnet":
            st.note(n, shown, "not needed: socksify hands out its own stand-in "
                    "addresses ([dns] range4, default 240.0.0.0/4)")
        elif key in ("tcp_read_time_out", "tcp_connect_time_out"):
            value = _number(n, words, st)
            if value is not None:
                if key == "tcp_read_time_out":
                    st.read_ms = (value, n)
                else:
                    st.connect_ms = (value, n)
        elif key == "localnet":
            _localnet(n, words, st)
        elif key == "dnat":
            st.skip(n, shown, "socksify does not rewrite destinations")
        elif key == "quiet_mode":
            st.skip(n, shown, "not a policy setting: run socksify -q")
        else:
            st.skip(n, shown, "unknown or unsupported option")
    return st


def convert(text: str, source: str) -> Converted:
    """The policy for a proxychains.conf's text; ConfigError if it has no proxy."""
    st = parse(text, source)
    if not st.hops:
        raise ConfigError(f"{source}: no usable proxy in [ProxyList]",
                          hint="a line like: socks5 192.0.2.1 1080")

    def at(line: int | None) -> str:
        return f"line {line}: {st.texts[line]}" if line else "proxychains' default"

    strategy, sline = st.strategy
    out = [f"# socksify policy converted from {source} by `socksify import-proxychains`",
           "# (\"line N\" is the line of that file a setting comes from).",
           "# Check it: socksifyd check-config -c FILE; use it: socksify -c FILE COMMAND.",
           "# Loopback destinations go direct in socksify unless --proxy-loopback.",
           "", f"[chains.{CHAIN}]",
           f'strategy = "{strategy}"'.ljust(40) + f"# {at(sline)}"]
    if strategy in ("random", "round_robin"):
        length, lline = st.chain_len
        if length > len(st.hops):
            st.note(lline or 0, f"chain_len {length}", f"more than the {len(st.hops)} "
                    "proxies: all of them are used")
            length = len(st.hops)
        out.append(f"chain_len = {length}".ljust(40) + f"# {at(lline)}")
    elif st.chain_len[1]:
        st.note(st.chain_len[1], f"chain_len {st.chain_len[0]}",
                "ignored: it applies to random and round_robin chains only")
    dns, dline = st.dns
    out.append(f'dns = "{dns}"'.ljust(40) + f"# {at(dline)}"
               + ("" if dline else " (no proxy_dns: names resolved here)"))
    for key, (ms, line) in (("connect_timeout", st.connect_ms),
                            ("read_timeout", st.read_ms)):
        out.append(f"{key} = {ms / 1000:g}".ljust(40) + f"# {at(line)}"
                   + ("" if line else f" ({ms} ms)"))
    out.append("hops = [")
    if dns == "remote" and any(url.startswith("socks4://") for url, _, _ in st.hops):
        out.append("    # proxychains asks a socks4 proxy for a host name in SOCKS4a: "
                   "socks4a:// here")
    for url, line, text in st.hops:
        if dns == "remote" and url.startswith("socks4://"):
            url = "socks4a://" + url[len("socks4://"):]
        out.append(f"    {json.dumps(url)},".ljust(40) + f"# line {line}: {text}")
    out.append("]")
    out += st.notes
    for net, port, line, text in st.localnets:
        out += ["", "[[rules]]".ljust(40) + f"# line {line}: {text}",
                f'name = "localnet (line {line})"', f"dest = [{json.dumps(net)}]"]
        if port is not None:
            out.append(f"port = [{port}]")
        out.append('action = "direct"')
    out += ["", "[default]", f'action = "chain:{CHAIN}"']
    return Converted("\n".join(out) + "\n", st.unsupported)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="socksify import-proxychains",
        description="Convert a proxychains.conf into a socksify policy (TOML).")
    p.add_argument("file", type=Path, metavar="FILE", help="the proxychains.conf")
    p.add_argument("-o", "--output", type=Path, metavar="OUT",
                   help="write the policy to OUT (default: standard output)")
    args = p.parse_args(argv)
    from .policy import Policy
    try:
        text = args.file.read_text(errors="replace")
    except OSError as exc:
        print(f"socksify import-proxychains: {args.file}: {exc.strerror}",
              file=sys.stderr)
        return 1
    try:
        result = convert(text, str(args.file))
        Policy.parse(result.toml, str(args.output or "<converted>"))
    except ConfigError as exc:
        print(f"socksify import-proxychains: {exc}", file=sys.stderr)
        return 1
    for line in result.unsupported:
        print(f"socksify import-proxychains: not converted: {line}", file=sys.stderr)
    if args.output:
        args.output.write_text(result.toml)
    else:
        sys.stdout.write(result.toml)
    return 0

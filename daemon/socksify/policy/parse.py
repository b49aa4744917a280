"""The policy file: TOML in, the fields of a Policy out, with errors that name the
file, the line and what would be accepted (tomllib keeps no line numbers: they are
found in the text)."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..chains.spec import ChainSpec, Strategy
from ..dns import CAPACITY as DNS_MAX_NAMES
from ..dns import DEFAULT_RANGE4, DEFAULT_RANGE6
from ..dns import MIN_AGE as DNS_MIN_AGE
from ..errors import ConfigError
from ..proxies import Proxy
from . import lint
from .rules import NO_NAMES, Action, Network, Rule
from .tlsopts import tls_proxy

TOP_KEYS = {"proxies", "chains", "rules", "default", "dns", "daemon", "frontdoor"}
FRONTDOOR_KEYS = {"listen", "users", "unidentified"}
CHAIN_KEYS = {"hops", "strategy", "chain_len", "connect_timeout", "read_timeout", "dns",
              "data_path", "prebuilt", "prebuilt_max_age", "pipeline", "isolate"}
RULE_KEYS = {"name", "app", "comm", "user", "parent", "dest", "port", "action", "dns",
             "udp"}
UDP_MODES = ("refuse", "direct", "chain")
DAEMON_KEYS = {"allow_users"}
DNS_KEYS = {"range4", "range6", "max_names", "min_age"}
DNS_MODES = ("remote", "local", "block")
ACTION_HINT = 'action is "direct", "block" or "chain:NAME"'


@dataclass(frozen=True)
class Fields:
    """What a policy file says: the fields of a Policy (__init__.py)."""

    chains: dict[str, ChainSpec]
    default: Action
    source: str
    rules: tuple[Rule, ...] = ()
    allow_users: tuple[str | int, ...] = ()
    warnings: tuple[str, ...] = ()
    dns_range4: str = DEFAULT_RANGE4
    dns_range6: str = DEFAULT_RANGE6
    frontdoor: tuple[str, int] | None = None       # where the SOCKS front door listens
    frontdoor_users: tuple[tuple[str, str], ...] = ()
    unidentified: Action = Action("block")          # for front-door requests of
                                                    # other uids, or of no uid found
    dns_max_names: int = DNS_MAX_NAMES              # stand-ins per user and family
    dns_min_age: float = DNS_MIN_AGE                # seconds reserved after last use


class Parser:
    """Turns the parsed TOML into a Policy's fields; finds line numbers in the text for errors
    (tomllib keeps none)."""

    def __init__(self, text: str, source: str) -> None:
        self.lines = text.splitlines()
        self.source = source
        self.headers = [(n, _header(line)) for n, line in enumerate(self.lines, 1)]

    # -- where things are ----------------------------------------------------------
    def table_line(self, name: str, nth: int = 0) -> int | None:
        seen = 0
        for number, header in self.headers:
            if header == name:
                if seen == nth:
                    return number
                seen += 1
        return None

    def key_line(self, table_line: int | None, key: str) -> int | None:
        """The line of `key = …` inside the table starting at table_line (the top of
        the file when None); the table's own line if the key is not found there."""
        start = table_line or 0
        for number in range(start + 1, len(self.lines) + 1):
            if number > start + 1 and self.headers[number - 1][1] is not None:
                break
            if re.match(rf"\s*{re.escape(key)}\s*=", self.lines[number - 1]):
                return number
        return table_line

    def error(self, line: int | None, message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(message, self.source, line, hint)

    # -- the document ----------------------------------------------------------------
    def policy(self, doc: dict[str, Any]) -> Fields:
        for key in doc:
            if key not in TOP_KEYS:
                line = self.table_line(key) or self.key_line(None, key)
                raise self.error(line, f"unknown table or key {key!r}",
                                 "tables are [proxies], [chains.NAME], [[rules]], "
                                 "[default] and [daemon]")
        proxies = self.proxies(self.table(doc, "proxies"))
        chains = {name: self.chain(name, body, proxies)
                  for name, body in self.table(doc, "chains").items()}
        rules_raw = doc.get("rules", [])
        if not isinstance(rules_raw, list):
            raise self.error(self.key_line(None, "rules"), "rules must be an array of "
                             "tables", "write each rule as [[rules]]")
        rules = tuple(self.rule(i, body, chains) for i, body in enumerate(rules_raw))
        default_table = self.table(doc, "default")
        dline = self.table_line("default")
        for key in default_table:
            if key != "action":
                raise self.error(self.key_line(dline, key),
                                 f"unknown key {key!r} in [default]",
                                 "[default] holds only action")
        default = self.action(str(default_table.get("action", "block")), chains,
                              self.key_line(dline, "action"))
        dns = self.table(doc, "dns")
        dns_line = self.table_line("dns")
        for key, value in dns.items():
            if key not in DNS_KEYS:
                raise self.error(self.key_line(dns_line, key),
                                 f"unknown key {key!r} in [dns]",
                                 f"accepted keys: {', '.join(sorted(DNS_KEYS))}")
            if key in ("max_names", "min_age"):
                continue
            version = 4 if key == "range4" else 6
            try:
                net = ipaddress.ip_network(str(value))
                if net.version != version or net.num_addresses < 256:
                    raise ValueError
            except ValueError:
                raise self.error(self.key_line(dns_line, key),
                                 f"dns.{key} {value!r} is not an IPv{version} network "
                                 "of at least 256 addresses",
                                 f'{key} = "{DEFAULT_RANGE4 if version == 4 else DEFAULT_RANGE6}"') from None
        max_names, min_age = self.dns_limits(dns, dns_line)
        daemon = self.table(doc, "daemon")
        for key in daemon:
            if key not in DAEMON_KEYS:
                raise self.error(self.key_line(self.table_line("daemon"), key),
                                 f"unknown key {key!r} in [daemon]",
                                 f"accepted keys: {', '.join(sorted(DAEMON_KEYS))}")
        allow = tuple(self.users(daemon.get("allow_users", []),
                                 self.key_line(self.table_line("daemon"), "allow_users"),
                                 "daemon.allow_users"))
        warnings = lint.shadowed(self.source, rules) + \
            lint.name_warnings(self.source, rules) + [
            f"{self.source}:{self.table_line('chains.' + c.name) or '?'}: "
            + NO_NAMES.format(chain=c.name) + "; host names looked up under it will "
            "not resolve"
            for c in chains.values() if c.dns == "remote" and not c.carries_names]
        listen, users, unidentified = self.frontdoor(self.table(doc, "frontdoor"), chains)
        return Fields(chains, default, self.source, rules, allow, tuple(warnings),
                      str(dns.get("range4", DEFAULT_RANGE4)),
                      str(dns.get("range6", DEFAULT_RANGE6)), listen, users,
                      unidentified, max_names, min_age)

    def dns_limits(self, dns: dict[str, Any], dns_line: int | None) -> tuple[int, float]:
        """[dns] max_names (at least 16, and no more than range4 and range6 hold; when
        absent, the default or what the ranges hold) and min_age (seconds, >= 0)."""
        max_names = dns.get("max_names", DNS_MAX_NAMES)
        line = self.key_line(dns_line, "max_names")
        if isinstance(max_names, bool) or not isinstance(max_names, int) \
                or max_names < 16:
            raise self.error(line, f"dns.max_names {max_names!r} is not a whole number "
                             "of at least 16", f"max_names = {DNS_MAX_NAMES}")
        for key, default in (("range4", DEFAULT_RANGE4), ("range6", DEFAULT_RANGE6)):
            room = ipaddress.ip_network(str(dns.get(key, default))).num_addresses - 2
            if max_names > room and "max_names" in dns:
                raise self.error(line, f"dns.max_names {max_names} is more than the "
                                 f"{room} stand-in addresses dns.{key} "
                                 f"{dns.get(key, default)!r} holds",
                                 f"max_names = {room}, or a larger {key}")
        min_age = dns.get("min_age", DNS_MIN_AGE)
        if isinstance(min_age, bool) or not isinstance(min_age, (int, float)) \
                or not 0 <= min_age < float("inf"):
            raise self.error(self.key_line(dns_line, "min_age"),
                             f"dns.min_age {min_age!r} is not a number of seconds >= 0",
                             f"min_age = {DNS_MIN_AGE:.0f}")
        return max_names, float(min_age)

    def frontdoor(self, table: dict[str, Any], chains: dict[str, ChainSpec]
                  ) -> tuple[tuple[str, int] | None, tuple[tuple[str, str], ...], Action]:
        tline = self.table_line("frontdoor")
        for key in table:
            if key not in FRONTDOOR_KEYS:
                raise self.error(self.key_line(tline, key),
                                 f"unknown key {key!r} in [frontdoor]",
                                 f"accepted keys: {', '.join(sorted(FRONTDOOR_KEYS))}")
        listen = None
        if "listen" in table:
            try:
                listen = parse_listen(str(table["listen"]))
            except ValueError as exc:
                raise self.error(self.key_line(tline, "listen"), f"frontdoor.listen: "
                                 f"{exc}", 'listen = "127.0.0.1:1080"') from None
        users = table.get("users", {})
        if not isinstance(users, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and k and v
                for k, v in users.items()):
            raise self.error(self.key_line(tline, "users"), "frontdoor.users must map "
                             "user names to passwords", 'users = { alice = "s3cret" }')
        unidentified = self.action(str(table.get("unidentified", "block")), chains,
                                   self.key_line(tline, "unidentified"))
        return listen, tuple(sorted(users.items())), unidentified

    def table(self, doc: dict[str, Any], key: str) -> dict[str, Any]:
        value = doc.get(key, {})
        if not isinstance(value, dict):
            raise self.error(self.key_line(None, key), f"{key} must be a table",
                             f"write [{key}]")
        return value

    def proxies(self, table: dict[str, Any]) -> dict[str, Proxy]:
        out = {}
        tline = self.table_line("proxies")
        for name, url in table.items():
            line = self.key_line(tline, name)
            try:
                if isinstance(url, dict):
                    out[name] = tls_proxy(url, self.source)
                else:
                    out[name] = Proxy.parse(str(url))
            except ConfigError as exc:
                raise self.error(line, f"proxies.{name}: {exc}") from None
        return out

    def chain(self, name: str, body: Any, proxies: dict[str, Proxy]) -> ChainSpec:
        tline = self.table_line(f"chains.{name}")
        if not isinstance(body, dict):
            raise self.error(tline, f"chains.{name} must be a table",
                             f"write it as [chains.{name}]")
        for key in body:
            if key not in CHAIN_KEYS:
                raise self.error(self.key_line(tline, key),
                                 f"unknown key {key!r} in [chains.{name}]",
                                 f"accepted keys: {', '.join(sorted(CHAIN_KEYS))}")
        hline = self.key_line(tline, "hops")
        hops_raw = body.get("hops")
        if not isinstance(hops_raw, list) or not hops_raw:
            raise self.error(hline, f"chains.{name}.hops must be a non-empty list of "
                             "proxy URLs or names", 'hops = ["socks4://10.0.0.5:1080"]')
        hops = []
        for item in hops_raw:
            text = str(item)
            if text in proxies:
                hops.append(proxies[text])
                continue
            try:
                hops.append(Proxy.parse(text))
            except ConfigError as exc:
                known = f"; named proxies: {', '.join(sorted(proxies))}" if proxies else ""
                raise self.error(hline, f"chains.{name}.hops: {exc}{known}") from None
        try:
            strategy = Strategy(body.get("strategy", "strict"))
        except ValueError:
            raise self.error(self.key_line(tline, "strategy"),
                             f"chains.{name}.strategy {body.get('strategy')!r} is not "
                             "known", "strict | dynamic | random | round_robin") from None
        dns = self.dns_mode(body, self.key_line(tline, "dns"), f"chains.{name}")
        prebuilt = body.get("prebuilt", 0)
        if isinstance(prebuilt, bool) or not isinstance(prebuilt, int):
            raise self.error(self.key_line(tline, "prebuilt"),
                             f"chains.{name}.prebuilt must be a whole number of tunnels",
                             "prebuilt = 2 keeps two tunnels ready; 0 (the default) "
                             "keeps none")
        if prebuilt and strategy is not Strategy.STRICT:
            raise self.error(self.key_line(tline, "prebuilt"),
                             f"chains.{name}: prebuilt tunnels need a fixed route",
                             'use strategy = "strict", or remove prebuilt')
        try:
            return ChainSpec(name, tuple(hops), strategy, body.get("chain_len"),
                             float(body.get("connect_timeout", 5.0)),
                             float(body.get("read_timeout", 10.0)), dns,
                             str(body.get("data_path", "handoff")), prebuilt,
                             float(body.get("prebuilt_max_age", 20.0)),
                             body.get("pipeline", True), str(body.get("isolate", "none")))
        except (TypeError, ValueError) as exc:
            line = next((self.key_line(tline, k) for k in (
                "data_path", "prebuilt", "prebuilt_max_age", "pipeline", "isolate")
                         if k in str(exc)), tline)
            raise self.error(line, str(exc)) from None

    def rule(self, index: int, body: Any, chains: dict[str, ChainSpec]) -> Rule:
        tline = self.table_line("rules", index)
        where = f"rule {index + 1}"
        if not isinstance(body, dict):
            raise self.error(tline, f"{where} must be a table", "write [[rules]]")
        for key in body:
            if key not in RULE_KEYS:
                raise self.error(self.key_line(tline, key),
                                 f"unknown key {key!r} in {where}",
                                 f"accepted keys: {', '.join(sorted(RULE_KEYS))}")
        if "action" not in body:
            raise self.error(tline, f"{where} has no action", ACTION_HINT)
        line_of: Callable[[str], int | None] = lambda key: self.key_line(tline, key)
        label = str(body["name"]) if "name" in body else \
            f"rule {index + 1}" + (f" (line {tline})" if tline else "")
        networks, hosts = self.destinations(body.get("dest", []), line_of("dest"), where)
        action = self.action(str(body["action"]), chains, line_of("action"))
        if "dns" in body:
            if action.kind != "chain":
                raise self.error(line_of("dns"), f"{where}: dns applies to chain actions "
                                 "only", 'drop dns, or use action = "chain:NAME"')
            action = Action("chain", action.chain,
                            self.dns_mode(body, line_of("dns"), where))
        return Rule(
            label=label, line=tline,
            action=action,
            apps=tuple(self.strings(body.get("app", []), line_of("app"), f"{where}.app")),
            comms=tuple(self.strings(body.get("comm", []), line_of("comm"),
                                     f"{where}.comm")),
            users=tuple(self.users(body.get("user", []), line_of("user"),
                                   f"{where}.user")),
            parents=tuple(self.strings(body.get("parent", []), line_of("parent"),
                                       f"{where}.parent")),
            networks=networks, hosts=hosts,
            ports=tuple(self.ports(body.get("port", []), line_of("port"), where)),
            udp=self.udp_mode(body, line_of("udp"), where, action))

    def action(self, text: str, chains: dict[str, ChainSpec],
               line: int | None) -> Action:
        if text in ("direct", "block"):
            return Action(text)
        if text.startswith("chain:"):
            name = text[len("chain:"):]
            if name not in chains:
                raise self.error(line, f"action {text!r} names no chain",
                                 f"chains defined: {', '.join(sorted(chains)) or 'none'}")
            return Action("chain", chains[name], chains[name].dns)
        raise self.error(line, f"unknown action {text!r}", ACTION_HINT)

    def udp_mode(self, body: dict[str, Any], line: int | None, what: str,
                 action: Action) -> str:
        mode = body.get("udp", "")
        if mode not in ("", *UDP_MODES):
            raise self.error(line, f"{what}.udp {mode!r} is not known",
                             " | ".join(UDP_MODES))
        if mode == "chain" and action.kind != "chain":
            raise self.error(line, f'{what}.udp = "chain" needs a chain action',
                             'action = "chain:NAME", or udp = "refuse" | "direct"')
        return str(mode)

    def dns_mode(self, body: dict[str, Any], line: int | None, what: str) -> str:
        mode = body.get("dns", "remote")
        if mode not in DNS_MODES:
            raise self.error(line, f"{what}.dns {mode!r} is not known",
                             " | ".join(DNS_MODES))
        return str(mode)

    def strings(self, value: Any, line: int | None, what: str) -> list[str]:
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(i, str) and i for i in items):
            raise self.error(line, f"{what} must be a string or a list of strings",
                             f'{what.split(".")[-1]} = ["curl", "/usr/bin/*"]')
        return items

    def users(self, value: Any, line: int | None, what: str) -> list[str | int]:
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(i, (str, int)) and not isinstance(i, bool) for i in items):
            raise self.error(line, f"{what} must list user names or uids",
                             'user = ["alice", 1001]')
        return items

    def destinations(self, value: Any, line: int | None,
                     where: str) -> tuple[tuple[Network, ...], tuple[str, ...]]:
        items = value if isinstance(value, list) else [value]
        networks: list[Network] = []
        hosts: list[str] = []
        for item in items:
            if not isinstance(item, str) or not item:
                raise self.error(line, f"{where}.dest: {item!r} is not a string",
                                 'dest = ["10.0.0.0/8", "*.example.org"]')
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
                continue
            except ValueError:
                pass
            if "/" in item or not re.fullmatch(r"[A-Za-z0-9*?.\[\]_-]+", item):
                raise self.error(line, f"{where}.dest: {item!r} is neither an address, "
                                 "a CIDR block nor a host-name glob",
                                 'dest = ["10.0.0.0/8", "192.0.2.7", "*.onion"]')
            hosts.append(item.lower())
        return tuple(networks), tuple(hosts)

    def ports(self, value: Any, line: int | None, where: str) -> list[tuple[int, int]]:
        items = value if isinstance(value, list) else [value]
        out = []
        hint = 'port = [80, 443, "8000-8999"]'
        for item in items:
            if isinstance(item, int) and not isinstance(item, bool):
                lo = hi = item
            elif isinstance(item, str) and re.fullmatch(r"\d+(-\d+)?", item.strip()):
                a, _, b = item.strip().partition("-")
                lo, hi = int(a), int(b or a)
            else:
                raise self.error(line, f"{where}.port: {item!r} is not a port or a "
                                 "range", hint)
            if not (1 <= lo <= hi <= 65535):
                raise self.error(line, f"{where}.port: {item!r} is outside 1..65535 or "
                                 "an empty range", hint)
            out.append((lo, hi))
        return out


def parse_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:1080' or '[::1]:1080' -> (host, port); loopback only."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    if not loopback:
        raise ValueError(f"{host} is not a loopback address: the front door serves "
                         "this machine only")
    return host, int(port)


def _header(line: str) -> str | None:
    """'chains.anon' for '[chains.anon]', 'rules' for '[[rules]]', else None."""
    m = re.match(r"\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$", line)
    if not m:
        return None
    return ".".join(part.strip().strip('"\'') for part in m.group(1).split("."))

"""The policy: which way each connection leaves — through a named chain, direct, or
not at all — from ordered rules on the application and the destination.

    [proxies]      name = "socks4://host:port"              (optional)
    [chains.NAME]  hops, strategy, chain_len, connect_timeout, read_timeout, dns,
                   data_path, prebuilt, prebuilt_max_age
    [[rules]]      name, app, comm, user, parent, dest, port, action, dns, udp
                   (first match wins)

app and parent match the executable (/proc/PID/exe on Linux: its base name, or its
path when the pattern has a '/'), which a program cannot change about itself; comm
matches the name a program reports for itself (prctl(PR_SET_NAME), argv[0]), which it
can, and is only for rules where that does not matter.
    [default]      action                                   (default: block)
    [dns]          range4, range6, max_names, min_age       (the stand-in addresses)
    [daemon]       allow_users                              (root's daemon only)

dns = "remote" (default: a proxied name is resolved by the last hop), "local" (resolved
here, then its address goes through the chain) or "block" (the lookup fails).
udp = "refuse", "direct" or "chain": whether datagrams the rule matches may go out
directly (default: yes under a direct rule, no under a chain), or, under a chain rule,
through the chain's hops (SOCKS5 UDP ASSOCIATE on every hop; the front door's
clients and isolated programs, so far).

Every error names the file, the line and what would be accepted."""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

from ..chains.spec import ChainSpec
from ..errors import ConfigError
from ..procinfo import AppInfo
from .parse import Fields, Parser, parse_listen
from .rules import NO_NAMES, Action, Decision, IPAddress, NameDecision, Rule

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["Action", "Decision", "NameDecision", "Policy", "Rule", "parse_listen"]


class Policy(Fields):
    """A policy file's fields (parse.py) and the decisions over them."""

    def for_unidentified(self) -> Policy:
        """The policy for a front-door request of a uid that may not use this daemon,
        or whose uid cannot be found: the `unidentified` action decides alone, before
        any rule (a rule on ports or destinations must not serve another user)."""
        return dataclasses.replace(self, rules=(Rule("unidentified", None,
                                                     self.unidentified),),
                                   default=self.unidentified)

    @property
    def needs_app(self) -> bool:
        """Whether deciding needs the process's identity (psutil lookups)."""
        return any(r.needs_app for r in self.rules)

    def decide(self, app: AppInfo | None, addr: IPAddress | None, port: int,
               host: str | None = None) -> Decision:
        for rule in self.rules:
            if rule.matches(app, addr, port, host):
                return Decision(rule.action, rule.label, rule.udp)
        return Decision(self.default, "default")

    def decide_address(self, app: AppInfo | None, addr: IPAddress) -> Decision:
        """How a reverse lookup of addr is decided. The port is not known, so every
        rule that could match a connection to addr counts, up to the first that would
        match on any port: the answer is direct only if all of them are, else the first
        that is not (a PTR query for an address any port sends through a chain would
        name that destination to the local resolver)."""
        seen: list[Decision] = []
        for rule in self.rules:
            if rule.may_match_address(app, addr):
                seen.append(Decision(rule.action, rule.label, rule.udp))
                if not rule.ports:
                    break
        else:
            seen.append(Decision(self.default, "default"))
        return next((d for d in seen if d.action.kind != "direct"), seen[0])

    def decide_name(self, app: AppInfo | None, name: str) -> NameDecision:
        """How a name lookup is answered. The port is not known yet, so every rule
        that could match a connection to the name counts, up to the first that would
        match on any port: if any of them sends the name through a chain that resolves
        remotely, the lookup gets a stand-in address (a local query would leak the
        name); if all of them block, it fails; otherwise it resolves locally."""
        name = name.rstrip(".").lower()
        seen: list[tuple[Action, str]] = []
        for rule in self.rules:
            if rule.may_match_name(app, name):
                seen.append((rule.action, rule.label))
                if not rule.ports:
                    break
        else:
            seen.append((self.default, "default"))
        for action, label in seen:
            if action.kind == "chain" and action.dns == "remote":
                assert action.chain is not None
                if not action.chain.carries_names:
                    return NameDecision("block", label, NO_NAMES.format(
                        chain=action.chain.name))
                return NameDecision("remote", label)
        if all(a.kind == "block" or (a.kind == "chain" and a.dns == "block")
               for a, _ in seen):
            return NameDecision("block", seen[0][1], "blocked by policy")
        label = next(lbl for a, lbl in seen if a.kind != "block")
        return NameDecision("local", label)

    @classmethod
    def single_chain(cls, spec: ChainSpec, source: str = "--via") -> Policy:
        """Every connection through one chain: what `socksify --via` asks for."""
        return cls({spec.name: spec}, Action("chain", spec, spec.dns), source)

    @classmethod
    def load(cls, path: Path) -> Policy:
        try:
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read policy: {exc.strerror}", str(path)) from None
        return cls.parse(text, str(path))

    @classmethod
    def parse(cls, text: str, source: str) -> Policy:
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            m = re.search(r"line (\d+)", str(exc))
            raise ConfigError(f"not valid TOML: {exc}", source,
                              int(m.group(1)) if m else None) from None
        parsed = Parser(text, source).policy(doc)
        return cls(**{f.name: getattr(parsed, f.name) for f in dataclasses.fields(parsed)})

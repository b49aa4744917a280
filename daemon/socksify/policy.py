"""The policy: which way a connection leaves (through a named chain, direct, or not at
all). This version knows named chains and a default action; per-application rules
come next (issue 3) and will plug into Policy.decide()."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .chain import ChainSpec, Strategy
from .errors import ConfigError
from .proxies import Proxy

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CHAIN_KEYS = {"hops", "strategy", "chain_len", "connect_timeout", "read_timeout"}
ACTION_HINT = 'action is "direct", "block" or "chain:NAME"'


@dataclass(frozen=True)
class Action:
    kind: str                      # "chain" | "direct" | "block"
    chain: ChainSpec | None = None

    def __str__(self) -> str:
        return f"chain:{self.chain.name}" if self.chain else self.kind


@dataclass(frozen=True)
class Policy:
    chains: dict[str, ChainSpec]
    default: Action
    source: str

    def decide(self, host: str, port: int) -> Action:
        return self.default

    @classmethod
    def single_chain(cls, spec: ChainSpec, source: str = "--via") -> Policy:
        """Every connection through one chain: what `socksify --via` asks for."""
        return cls({spec.name: spec}, Action("chain", spec), source)

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
        lines = text.splitlines()

        def err(msg: str, needle: str, hint: str | None = None) -> ConfigError:
            return ConfigError(msg, source, _line_of(lines, needle), hint)

        for key in doc:
            if key not in ("chains", "default"):
                raise err(f"unknown table or key {key!r}", key,
                          "this version reads [chains.NAME] and [default]")
        chains: dict[str, ChainSpec] = {}
        for name, body in _table(doc, "chains", source).items():
            if not isinstance(body, dict):
                raise err(f"chains.{name} must be a table", name,
                          f"write it as [chains.{name}]")
            chains[name] = _chain(name, body, err)
        default = _table(doc, "default", source)
        for key in default:
            if key != "action":
                raise err(f"unknown key {key!r} in [default]", key,
                          "[default] holds only action")
        return cls(chains, _action(str(default.get("action", "block")), chains, err),
                   source)


def _table(doc: dict[str, Any], key: str, source: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key} must be a table", source, hint=f"write [{key}]")
    return value


def _chain(name: str, body: dict[str, Any], err: Any) -> ChainSpec:
    for key in body:
        if key not in CHAIN_KEYS:
            raise err(f"unknown key {key!r} in [chains.{name}]", key,
                      f"accepted keys: {', '.join(sorted(CHAIN_KEYS))}")
    hops_raw = body.get("hops")
    if not isinstance(hops_raw, list) or not hops_raw:
        raise err(f"chains.{name}.hops must be a non-empty list of proxy URLs",
                  f"[chains.{name}]", 'hops = ["socks4://10.0.0.5:1080"]')
    hops = []
    for url in hops_raw:
        try:
            hops.append(Proxy.parse(str(url)))
        except ConfigError as exc:
            raise err(f"chains.{name}.hops: {exc}", str(url)) from None
    try:
        strategy = Strategy(body.get("strategy", "strict"))
    except ValueError:
        raise err(f"chains.{name}.strategy {body.get('strategy')!r} is not known",
                  "strategy", "strict | dynamic | random | round_robin") from None
    try:
        return ChainSpec(name, tuple(hops), strategy, body.get("chain_len"),
                         float(body.get("connect_timeout", 5.0)),
                         float(body.get("read_timeout", 10.0)))
    except (TypeError, ValueError) as exc:
        raise err(str(exc), f"[chains.{name}]") from None


def _action(text: str, chains: dict[str, ChainSpec], err: Any) -> Action:
    if text in ("direct", "block"):
        return Action(text)
    if text.startswith("chain:"):
        name = text[len("chain:"):]
        if name not in chains:
            raise err(f"action {text!r} names no chain", text,
                      f"chains defined: {', '.join(sorted(chains)) or 'none'}")
        return Action("chain", chains[name])
    raise err(f"unknown action {text!r}", text, ACTION_HINT)


def _line_of(lines: list[str], needle: str) -> int | None:
    """1-based line of the first line that mentions needle (best effort for errors)."""
    for number, line in enumerate(lines, 1):
        if needle in line.split("#", 1)[0]:
            return number
    return None

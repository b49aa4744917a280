"""A chain as the policy names it: its hops, its strategy and its settings. No I/O."""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from ..proxies import Proxy
from .streamauth import isolatable

DATA_PATHS = ("handoff", "relay")
ISOLATE_MODES = ("none", "app", "process", "connection")   # stream isolation keys
MAX_PREBUILT = 64
log = logging.getLogger("socksify.chain")


class Strategy(str, enum.Enum):
    STRICT = "strict"          # every hop, in order; any failure fails the connection
    DYNAMIC = "dynamic"        # in order, skipping hops that are down; at least one
    RANDOM = "random"          # chain_len hops drawn at random
    ROUND_ROBIN = "round_robin"  # chain_len hops, starting one further each time


@dataclass(frozen=True)
class ChainSpec:
    name: str
    hops: tuple[Proxy, ...]
    strategy: Strategy = Strategy.STRICT
    chain_len: int | None = None      # random / round_robin only; default: all hops
    connect_timeout: float = 5.0      # seconds for the TCP connect to hop 1
    read_timeout: float = 10.0        # seconds for each hop's SOCKS reply (the hop
                                      # connects onwards before it replies)
    dns: str = "remote"               # a target name: remote | local | block
    data_path: str = "handoff"        # handoff (the program's own socket) | relay
    prebuilt: int = 0                 # tunnels kept ready up to the last hop (strict)
    prebuilt_max_age: float = 20.0    # seconds a ready tunnel may wait for a request
    pipeline: bool = True             # send every hop's request at once (docs/data-path.md)
    isolate: str = "none"             # SOCKS5 credentials per app | process | connection

    def __post_init__(self) -> None:
        if not self.hops:
            raise ValueError(f"chain {self.name!r} has no hops")
        if self.chain_len is not None and not 1 <= self.chain_len <= len(self.hops):
            raise ValueError(f"chain {self.name!r}: chain_len {self.chain_len} must be "
                             f"between 1 and the number of hops ({len(self.hops)})")
        if not (self.connect_timeout > 0 and self.read_timeout > 0):   # NaN too
            raise ValueError(f"chain {self.name!r}: connect_timeout and read_timeout "
                             "must be positive")
        tls = next((i for i, h in enumerate(self.hops) if h.tls), None)
        if tls is not None and self.data_path == "handoff":
            # a TLS session lives in the daemon: the program's socket cannot carry it
            object.__setattr__(self, "data_path", "relay")
            log.info("chain %r: relayed, not handed off: hop %d %s is TLS, and its "
                     "session lives in the daemon", self.name, tls + 1, self.hops[tls])
        if self.data_path not in DATA_PATHS:
            raise ValueError(f"chain {self.name!r}: data_path {self.data_path!r} must be "
                             f"one of {', '.join(DATA_PATHS)}")
        if not 0 <= self.prebuilt <= MAX_PREBUILT:
            raise ValueError(f"chain {self.name!r}: prebuilt {self.prebuilt} must be "
                             f"between 0 (off) and {MAX_PREBUILT}")
        if not isinstance(self.pipeline, bool):
            raise ValueError(f"chain {self.name!r}: pipeline must be true or false "
                             f"(not {self.pipeline!r})")
        if self.isolate not in ISOLATE_MODES:
            raise ValueError(f"chain {self.name!r}: isolate {self.isolate!r} must be "
                             f"one of {', '.join(ISOLATE_MODES)}")
        if not self.prebuilt_max_age > 0:
            raise ValueError(f"chain {self.name!r}: prebuilt_max_age must be positive")

    def describe(self) -> str:
        return " -> ".join(str(h) for h in self.hops)

    @property
    def carries_names(self) -> bool:
        """Whichever hop ends up last, can it be asked for a host name?"""
        if self.strategy is Strategy.STRICT:
            return self.hops[-1].carries_names
        return all(h.carries_names for h in self.hops)

    @property
    def isolated_before_last(self) -> bool:
        """Would stream isolation give a hop before the last its own credentials? (A
        pre-built tunnel is negotiated up to the last hop before its connection is
        known: such a chain cannot use one.)"""
        return self.isolate != "none" and any(isolatable(h) for h in self.hops[:-1])

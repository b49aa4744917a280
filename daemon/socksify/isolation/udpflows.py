"""The records of the isolation path's UDP carrying (datagrams.py): one per program
socket, one per flow (conntrack entry) of it. No I/O."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from ..chains import ChainSpec
from ..core.records import UdpFlow
from ..core.udpflow import ChainFlow
from ..dns import StandIn
from ..policy import Policy
from .owners import IPAddress

QUEUE = 1024         # datagrams of one program socket waiting (identify, associate)


@dataclass
class Path:
    """One flow (conntrack entry): the program's socket to one destination, as the
    carrier sees it (from `peer`); how the policy decided it, once."""
    carrier: asyncio.DatagramTransport
    peer: tuple[Any, ...]
    dst: IPAddress
    port: int
    program: Program
    last: float
    host: str | None = None           # the name behind a stand-in address
    stand_in: StandIn | None = None
    chain: ChainSpec | None = None    # decided: through this chain
    refused: str | None = None        # decided: dropped, why
    decided: bool = False

    @property
    def target(self) -> str:
        return self.host or str(self.dst)


@dataclass
class Program:
    """One program socket: its flow record (shared by its chains' flows), one
    ChainFlow per chain it uses and its waiting datagrams."""
    key: tuple[IPAddress, int]
    last: float
    remote: tuple[IPAddress, int]       # its first flow's destination
    queue: asyncio.Queue[tuple[Path, bytes]] = field(
        default_factory=lambda: asyncio.Queue(QUEUE))
    flow: UdpFlow | None = None
    policy: Policy | None = None
    chains: dict[str, ChainFlow] = field(default_factory=dict)   # open ones
    failed: dict[str, float] = field(default_factory=dict)
    paths: list[Path] = field(default_factory=list)
    warned: set[tuple[str, str]] = field(default_factory=set)
    pump: asyncio.Task[None] | None = None
    dropped: int = 0                  # before the flow record exists
    inode: int | None = None          # its socket's, when sock_diag found it

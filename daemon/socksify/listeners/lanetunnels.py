"""A pool's ready tunnels kept in the lane (lane/lane.c lane_pool_*), and built and
replaced there: the store behind chains/pool.py's TunnelPool where the daemon runs
the lane (listeners/lane.py)."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Protocol

from ..chains.pool import Prebuilt, Told
from ..chains.spec import ChainSpec
from ..lanelib import LaneLib
from ..sockstream import RawStream

log = logging.getLogger("socksify.daemon")


class Builder(Protocol):
    """What a store needs of the lane: its library, and builds (Lane.build)."""

    lib: LaneLib

    def build(self, pool_id: int, spec: ChainSpec) -> asyncio.Future[None] | None: ...

    def refill(self, pool_id: int, spec: ChainSpec, quiet: float, told: Told) -> bool: ...

    def unrefill(self, pool_id: int) -> None: ...


class LaneTunnels:
    """A pool's ready tunnels (chains/pool.py TunnelStore), kept in the lane's pool
    number `id` (lane_pool_put): the lane finishes them for the pool's routes, and the
    daemon's own takes come from there too. Each tunnel is the lane's once put."""

    def __init__(self, lane: Builder, pool_id: int, spec: ChainSpec) -> None:
        self.lane = lane
        self.lib = lane.lib
        self.id = pool_id
        self.spec = spec

    def __len__(self) -> int:
        state = self.lib.pool_state(self.id)
        return state.ready if state is not None else 0

    @property
    def family(self) -> int | None:
        state = self.lib.pool_state(self.id)
        return state.family or None if state is not None else None

    def put(self, ready: Prebuilt) -> None:
        expires = ready.born + self.spec.prebuilt_max_age   # time.monotonic: CLOCK_MONOTONIC
        try:
            self.lib.pool_put(self.id, ready.stream.sock.fileno(), int(expires * 1e9),
                              self.spec.prebuilt // 2)
        except OSError as exc:
            log.warning("chain %s: the lane cannot keep a pre-built tunnel: %s",
                        self.spec.name, exc)
            ready.stream.close()
            return
        ready.stream.sock.detach()

    def take(self) -> Prebuilt | None:
        fd = self.lib.pool_take(self.id)
        if fd is None:
            return None
        return Prebuilt(RawStream(socket.socket(fileno=fd), owned=True), self.spec.hops,
                        time.monotonic())

    def prune(self) -> float | None:
        state = self.lib.pool_state(self.id)
        if state is None or not state.ready:
            return None
        return state.oldest_expires_ns / 1e9 - self.spec.prebuilt_max_age

    def counts(self) -> tuple[int, int]:
        state = self.lib.pool_state(self.id)
        return (state.taken, state.discarded) if state is not None else (0, 0)

    def build(self) -> asyncio.Future[None] | None:
        return self.lane.build(self.id, self.spec)

    def refill(self, quiet: float, told: Told) -> bool:
        return self.lane.refill(self.id, self.spec, quiet, told)

    def close(self) -> None:
        self.lane.unrefill(self.id)
        self.lib.pool_close(self.id)

"""Grants: what a CARRY answer allowed (docs/wire.md, "Carried datagrams").

A grant binds an 8-byte random token to the process that asked (pid, uid, app), the
destination it asked about (as the program knows it: a stand-in stays one, with the
name behind it) and the rule, chain and session that decided it. The carrier takes a
datagram only with a known token, to that grant's destination, from a socket of that
grant's uid. Grants live while their policy generation does (a reload voids them, as
it voids the shims' cached answers); each uid holds at most MAX_PER_UID (the oldest
goes first), and grants of processes that are gone are dropped by prune()."""

from __future__ import annotations

import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass

from ..chains import ChainSpec
from ..dns import StandIn
from ..procinfo import AppInfo
from ..protocol import control as wire
from .records import Session

MAX_PER_UID = 4096


@dataclass(frozen=True)
class Grant:
    token: bytes
    app: AppInfo                   # pid and uid from SO_PEERCRED
    dst: wire.IPAddress            # as the program knows it
    port: int
    host: str | None               # the name behind a stand-in destination
    rule: str
    chain: ChainSpec
    session: Session | None
    generation: int
    created: float
    stand_in: StandIn | None = None   # held while a flow carries datagrams to it

    @property
    def target(self) -> str:
        """Where the last hop sends: the name for a stand-in, else the address."""
        return self.host or str(self.dst)


class Grants:
    def __init__(self, max_per_uid: int = MAX_PER_UID) -> None:
        self.max_per_uid = max_per_uid
        self._by_token: dict[bytes, Grant] = {}
        self._by_uid: dict[int, OrderedDict[bytes, None]] = {}

    def __len__(self) -> int:
        return len(self._by_token)

    def add(self, app: AppInfo, dst: wire.IPAddress, port: int, host: str | None,
            rule: str, chain: ChainSpec, session: Session | None,
            generation: int, stand_in: StandIn | None = None) -> Grant:
        grant = Grant(secrets.token_bytes(wire.CARRY_TOKEN_SIZE), app, dst, port, host,
                      rule, chain, session, generation, time.monotonic(), stand_in)
        own = self._by_uid.setdefault(app.uid, OrderedDict())
        while len(own) >= self.max_per_uid:
            oldest, _ = own.popitem(last=False)
            self._by_token.pop(oldest, None)
        own[grant.token] = None
        self._by_token[grant.token] = grant
        return grant

    def get(self, token: bytes, generation: int) -> Grant | None:
        """The grant of token, if it is of the current generation."""
        grant = self._by_token.get(token)
        if grant is None or grant.generation != generation:
            return None
        return grant

    def _drop(self, grant: Grant) -> None:
        self._by_token.pop(grant.token, None)
        own = self._by_uid.get(grant.app.uid)
        if own is not None:
            own.pop(grant.token, None)
            if not own:
                del self._by_uid[grant.app.uid]

    def prune(self, generation: int, in_use: set[bytes]) -> int:
        """Drop grants of another generation, and those of processes that are gone
        unless a live flow still uses them (a forked child may send on its parent's
        socket with the parent's token). Returns how many went."""
        gone = [g for g in self._by_token.values()
                if g.generation != generation
                or (g.token not in in_use and not _alive(g.app.pid))]
        for grant in gone:
            self._drop(grant)
        return len(gone)

    def clear(self) -> None:
        self._by_token.clear()
        self._by_uid.clear()


def _alive(pid: int) -> bool:
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

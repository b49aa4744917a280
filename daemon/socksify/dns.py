"""Remote DNS: stand-in ("fake") addresses for names that must be resolved at the far
end of a chain. A program looks a name up, the daemon hands out an address from a
reserved range and remembers the name; when the program connects to that address,
the chain carries the name to the last hop. Each user has a table of their own in
the daemon, shared by every program of that user."""

from __future__ import annotations

import ipaddress
import itertools
import os
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# 240.0.0.0/4 is reserved ("future use") and never routed; the IPv6 range is a
# unique-local /64 of our own ("SKFY" in its bits). Both can be changed in [dns].
DEFAULT_RANGE4 = "240.0.0.0/4"
DEFAULT_RANGE6 = "fd53:4b46:5900::/64"
# Names one user may hold at once, per family ([dns] max_names), and how long a
# stand-in stays reserved after its last use ([dns] min_age, seconds): docs/wire.md
# "RESOLVE" says why an hour.
CAPACITY = 65536
MIN_AGE = 3600.0


def normalize(name: str) -> str:
    return name.rstrip(".").lower()


class Exhausted(Exception):
    """No stand-in address is free: every one is held by a live connection or was used
    less than min_age ago. The lookup is refused rather than an address reused."""


class StandIn:
    """One stand-in address and what still holds it."""
    __slots__ = ("name", "addr", "uid", "used", "live")

    def __init__(self, name: str, addr: IPAddress, uid: int, now: float) -> None:
        self.name = name
        self.addr = addr
        self.uid = uid
        self.used = now     # last lookup, connect or end of a relayed connection
        self.live = 0       # relayed connections (and pending ones) using it now


class _Table:
    """One user's stand-ins of one family, least recently used first."""

    def __init__(self) -> None:
        self.by_name: OrderedDict[str, StandIn] = OrderedDict()
        self.by_addr: dict[IPAddress, StandIn] = {}
        self.next = itertools.count(1)


class FakeNames:
    """name <-> stand-in address, per user and family. Each user (uid) has a table of
    their own: an address names what that user looked up and nothing else, so no user
    learns or reaches another's names through it. An address is given to another name
    only when no live connection holds it and it was last used more than min_age
    seconds ago (a handed-off connection is invisible once handed off: its connect
    counts as a use); when none is, the lookup is refused (Exhausted)."""

    def __init__(self, range4: str = DEFAULT_RANGE4, range6: str = DEFAULT_RANGE6,
                 capacity: int = CAPACITY, min_age: float = MIN_AGE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.nets: dict[int, Network] = {4: ipaddress.IPv4Network(range4),
                                         6: ipaddress.IPv6Network(range6)}
        self.capacity = {v: min(capacity, n.num_addresses - 2)
                         for v, n in self.nets.items()}
        self.min_age = min_age
        self._clock = clock
        self._tables: dict[tuple[int, int], _Table] = {}

    def configure(self, capacity: int, min_age: float) -> None:
        """New limits for the tables as they are (a reload)."""
        self.capacity = {v: min(capacity, n.num_addresses - 2)
                         for v, n in self.nets.items()}
        self.min_age = min_age

    def is_fake(self, addr: IPAddress) -> bool:
        return any(addr.version == n.version and addr in n for n in self.nets.values())

    def _table(self, uid: int, version: int) -> _Table:
        table = self._tables.get((uid, version))
        if table is None:
            table = self._tables[(uid, version)] = _Table()
        return table

    def address_for(self, name: str, version: int = 4, uid: int = 0) -> IPAddress:
        """uid's stand-in for name: the one it has, a new one, or one recycled from a
        name nothing holds any more. Raises Exhausted (with the reason) when the table
        is full and every address in it is still held."""
        name = normalize(name)
        table = self._table(uid, version)
        now = self._clock()
        entry = table.by_name.get(name)
        if entry is not None:
            entry.used = now
            table.by_name.move_to_end(name)
            return entry.addr
        if len(table.by_name) < self.capacity[version]:
            addr = self.nets[version][next(table.next)]
        else:
            old = self._reusable(table, now)
            del table.by_name[old.name]
            del table.by_addr[old.addr]
            addr = old.addr
        entry = StandIn(name, addr, uid, now)
        table.by_name[name] = entry
        table.by_addr[addr] = entry
        return addr

    def _reusable(self, table: _Table, now: float) -> StandIn:
        """The least recently used entry that nothing holds and that is old enough.
        Entries are kept in order of last use (every use moves one to the end), so the
        first unheld one that is too young means all after it are too."""
        held = 0
        for entry in table.by_name.values():
            if entry.live:
                held += 1
                continue
            if now - entry.used >= self.min_age:
                return entry
            break
        raise Exhausted(
            f"all {len(table.by_name)} stand-in addresses of this user are in use "
            f"({held} by live connections, the rest used in the last "
            f"{self.min_age:.0f}s); raise [dns] max_names or lower min_age")

    def name_for(self, addr: IPAddress, uid: int = 0) -> str | None:
        """The name uid looked up that addr stands for; None for an address uid never
        got (whoever else did)."""
        entry = self.lookup(addr, uid)
        return entry.name if entry is not None else None

    def lookup(self, addr: IPAddress, uid: int = 0) -> StandIn | None:
        table = self._tables.get((uid, addr.version))
        return table.by_addr.get(addr) if table is not None else None

    def use(self, addr: IPAddress, uid: int = 0) -> StandIn | None:
        """A connect to addr: a use that keeps it reserved for min_age from now."""
        entry = self.lookup(addr, uid)
        if entry is not None:
            self._touch(entry)
        return entry

    def hold(self, entry: StandIn) -> None:
        """A live connection holds entry's address until release()."""
        entry.live += 1

    def release(self, entry: StandIn) -> None:
        """The end of a live connection is its last use."""
        entry.live = max(0, entry.live - 1)
        self._touch(entry)

    def _touch(self, entry: StandIn) -> None:
        entry.used = self._clock()
        table = self._tables.get((entry.uid, entry.addr.version))
        if table is not None and table.by_name.get(entry.name) is entry:
            table.by_name.move_to_end(entry.name)

    def __len__(self) -> int:
        return sum(len(t.by_addr) for t in self._tables.values())


def hosts_path() -> Path:
    """/etc/hosts, or Windows' own (%SystemRoot%\\System32\\drivers\\etc\\hosts)."""
    if sys.platform == "win32":
        root = os.environ.get("SystemRoot") or "C:\\Windows"
        return Path(root) / "System32" / "drivers" / "etc" / "hosts"
    return Path("/etc/hosts")


def hosts_file_names(path: Path | None = None) -> frozenset[str]:
    """Names the local hosts file defines: looking them up leaks nothing."""
    path = hosts_path() if path is None else path
    names: set[str] = set()
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        names.update(normalize(f) for f in fields[1:])
    return frozenset(names)

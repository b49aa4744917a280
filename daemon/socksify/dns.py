"""Remote DNS: stand-in ("fake") addresses for names that must be resolved at the far
end of a chain. A program looks a name up, the daemon hands out an address from a
reserved range and remembers the name; when the program connects to that address,
the chain carries the name to the last hop. The table is the daemon's, so every
program it serves shares it."""

from __future__ import annotations

import ipaddress
import itertools
import os
import sys
from collections import OrderedDict
from pathlib import Path

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# 240.0.0.0/4 is reserved ("future use") and never routed; the IPv6 range is a
# unique-local /64 of our own ("SKFY" in its bits). Both can be changed in [dns].
DEFAULT_RANGE4 = "240.0.0.0/4"
DEFAULT_RANGE6 = "fd53:4b46:5900::/64"
CAPACITY = 65536


def normalize(name: str) -> str:
    return name.rstrip(".").lower()


class FakeNames:
    """name <-> stand-in address, per family; the least recently used entry is
    recycled when a range's table is full."""

    def __init__(self, range4: str = DEFAULT_RANGE4, range6: str = DEFAULT_RANGE6,
                 capacity: int = CAPACITY) -> None:
        self.nets: dict[int, Network] = {4: ipaddress.IPv4Network(range4),
                                         6: ipaddress.IPv6Network(range6)}
        self.capacity = {v: min(capacity, n.num_addresses - 2)
                         for v, n in self.nets.items()}
        self._by_name: dict[int, OrderedDict[str, IPAddress]] = {4: OrderedDict(),
                                                                 6: OrderedDict()}
        self._by_addr: dict[IPAddress, str] = {}
        self._next = {4: itertools.count(1), 6: itertools.count(1)}

    def is_fake(self, addr: IPAddress) -> bool:
        return any(addr.version == n.version and addr in n for n in self.nets.values())

    def address_for(self, name: str, version: int = 4) -> IPAddress:
        name = normalize(name)
        table = self._by_name[version]
        addr = table.get(name)
        if addr is not None:
            table.move_to_end(name)
            return addr
        if len(table) >= self.capacity[version]:
            _, addr = table.popitem(last=False)     # recycle the oldest
            del self._by_addr[addr]
        else:
            addr = self.nets[version][next(self._next[version])]
        table[name] = addr
        self._by_addr[addr] = name
        return addr

    def name_for(self, addr: IPAddress) -> str | None:
        name = self._by_addr.get(addr)
        if name is not None:
            self._by_name[addr.version].move_to_end(name)
        return name

    def __len__(self) -> int:
        return len(self._by_addr)


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

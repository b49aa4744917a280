"""What the daemon has learnt, this run, about each hop and early data: bytes that
reach a hop before its reply to the request ahead of them (a pipelined chain sends
every hop's request at once; docs/data-path.md "Pipelined negotiation").

A hop is unknown until seen. It is `good` once a pipelined negotiation through it
succeeded with early data behind its request; it is `stepwise` once a pipelined
negotiation failed at it (closed, reset, garbage or silence) and the same connection
then worked step by step: from then on nothing is sent past its request until it has
replied. Separately, a SOCKS5 hop with a user name is `userpass` once it chose
username/password (RFC 1929) when offered it with "no auth": only then is its
sub-negotiation pipelined (offered alone, so that the hop cannot pick another method
and read the credentials as a request). Kept per hop (host, port), per daemon process;
nothing is written to disk."""

from __future__ import annotations

from ..proxies import Proxy

GOOD = "good"
STEPWISE = "stepwise"


def _key(hop: Proxy) -> tuple[str, int]:
    return (hop.host, hop.port)


class EarlyData:
    def __init__(self) -> None:
        self._state: dict[tuple[str, int], str] = {}
        self._userpass: set[tuple[str, int]] = set()

    def stepwise(self, hop: Proxy) -> bool:
        return self._state.get(_key(hop)) == STEPWISE

    def good(self, hop: Proxy) -> bool:
        return self._state.get(_key(hop)) == GOOD

    def mark_good(self, hop: Proxy) -> None:
        self._state.setdefault(_key(hop), GOOD)       # never undoes `stepwise`

    def mark_stepwise(self, hop: Proxy) -> None:
        self._state[_key(hop)] = STEPWISE

    def userpass(self, hop: Proxy) -> bool:
        return _key(hop) in self._userpass

    def set_userpass(self, hop: Proxy, known: bool) -> None:
        if known:
            self._userpass.add(_key(hop))
        else:
            self._userpass.discard(_key(hop))

    def snapshot(self) -> dict[str, str]:
        """Hop address -> good | stepwise, for the hops seen so far."""
        return {f"{h}:{p}": s for (h, p), s in sorted(self._state.items())}

    def clear(self) -> None:
        self._state.clear()
        self._userpass.clear()


EARLY_DATA = EarlyData()      # the daemon's: one process, one run

"""Sessions, one per `socksify` command: its chain or policy, its events, and the
route selectors (with their pre-built tunnel pools) of each chain in use."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from pathlib import Path
from typing import Any, Callable, Iterable

from ..chains import ChainSpec, HopHealth, Selector, Strategy, TunnelPool
from ..chains.pool import StoreFactory, Tunnels
from ..chains.streamauth import isolatable
from ..errors import ConfigError
from ..paths import config_candidates
from ..policy import Policy
from ..procinfo import own_uid
from ..protocol import control as wire
from ..proxies import Proxy
from .records import Connection, Session

log = logging.getLogger("socksify.daemon")


class Sessions:
    def __init__(self, health: HopHealth) -> None:
        self.health = health
        self.open: dict[bytes, Session] = {}
        self.selectors: dict[str, Selector] = {}   # those of the daemon's policy
        # where pools keep their ready tunnels: the lane's store where it runs
        self.tunnel_store: StoreFactory = Tunnels
        self.ended: Callable[[], None] | None = None   # told when a session ends

    def start(self, msg: dict[str, Any], writer: asyncio.StreamWriter, owner: int,
              uid: int, current: Policy | None) -> Session:
        """A session for a `socksify` command's request (msg); `current` is the
        daemon's policy, which a session without a chain of its own follows."""
        policy: Policy | None
        if msg.get("via"):
            hops = tuple(Proxy.parse(str(u)) for u in msg["via"])
            strategy = Strategy(msg.get("strategy") or "strict")
            timeout = float(msg.get("timeout") or 5.0)
            try:
                spec = ChainSpec("via", hops, strategy, None, timeout, timeout,
                                 str(msg.get("dns") or "remote"),
                                 str(msg.get("data_path") or "handoff"),
                                 int(msg.get("prebuilt") or 0),
                                 pipeline=bool(msg.get("pipeline", True)),
                                 isolate=str(msg.get("isolate_streams") or "none"))
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
            if spec.prebuilt and strategy is not Strategy.STRICT:
                raise ConfigError("--prebuilt needs a fixed route: --strategy strict")
            policy = Policy.single_chain(spec)
        else:
            if msg.get("isolate_streams") and not msg.get("chain"):
                raise ConfigError("--isolate-streams applies to --via or --chain; in a "
                                  'policy, write isolate = "MODE" in the chain')
            if msg.get("config") and uid != own_uid():
                # A root daemon serving other users must not read files for them.
                raise ConfigError("only the daemon's own user may name a policy file; "
                                  "use --via, or the daemon's policy")
            policy = Policy.load(Path(str(msg["config"]))) if msg.get("config") \
                else current
            if policy is None:
                raise ConfigError(
                    "no chain: pass --via socks4://HOST:PORT, or -c FILE, or write a "
                    "policy file", hint="looked for " + ", ".join(
                        str(c) for c in config_candidates()))
            if msg.get("chain"):
                name = str(msg["chain"])
                if name not in policy.chains:
                    raise ConfigError(f"no chain {name!r} in {policy.source}", hint=(
                        f"chains defined: {', '.join(sorted(policy.chains)) or 'none'}"))
                spec = policy.chains[name]
                if msg.get("isolate_streams"):
                    spec = dataclasses.replace(spec, isolate=str(msg["isolate_streams"]))
                policy = Policy.single_chain(spec, f"chain {name} of {policy.source}")
        own = None if policy is current else policy  # follow reloads
        session = Session(self._session_id(msg.get("session")), own, writer,
                          bool(msg.get("verbose")), owner, uid,
                          isolated=bool(msg.get("isolate")),
                          quiet=bool(msg.get("quiet")) and not msg.get("verbose"))
        self.open[session.id] = session
        log.info("session %s opened by pid %d: %s%s", session.id.hex(), owner,
                 policy.source, " (isolated network namespace)" if session.isolated
                 else "")
        return session

    def _session_id(self, wanted: Any) -> bytes:
        """A new session's id: the one a socksify command asks for when it re-attaches
        after a daemon restart (so its running programs keep working), if it is well
        formed and free; else a fresh random one."""
        if isinstance(wanted, str) and len(wanted) == 2 * wire.SESSION_SIZE:
            try:
                sid = bytes.fromhex(wanted)
            except ValueError:
                sid = b""
            if sid and sid != bytes(wire.SESSION_SIZE) and sid not in self.open:
                return sid
        return secrets.token_bytes(wire.SESSION_SIZE)

    def end(self, session: Session) -> None:
        self.open.pop(session.id, None)
        close_pools(session.selectors.values())
        if self.ended is not None:
            self.ended()
        log.info("session %s closed", session.id.hex())

    def policy_for(self, session_id: bytes, uid: int, current: Policy | None
                   ) -> tuple[Session | None, Policy | None, str]:
        """The session and policy a request from uid falls under, or why none."""
        session = None
        if session_id != bytes(wire.SESSION_SIZE):
            session = self.open.get(session_id)
            if session is None or session.uid != uid:
                return None, None, "unknown session (its socksify command has ended)"
        policy = session.policy if session and session.policy else current
        if policy is None:
            return session, None, ("no policy: this daemon has no policy file and the "
                                   "program was not started by socksify")
        return session, policy, ""

    def selector(self, conn: Connection, chain: ChainSpec) -> Selector:
        # a session with its own chain (--via, -c, --chain) has its own selectors (and
        # pools); one that follows the daemon's policy shares the daemon's
        own = conn.session is not None and conn.session.policy is not None
        selectors = conn.session.selectors if own and conn.session else self.selectors
        selector = selectors.get(chain.name)
        if selector is None:
            selector = selectors[chain.name] = Selector(chain, self.health)
            _say_isolation(chain)
            if chain.prebuilt and chain.strategy is Strategy.STRICT:
                if chain.isolated_before_last:
                    # a pre-built tunnel is negotiated before its connection is known
                    log.warning("chain %s: isolate = %r gives a hop before the last "
                                "its own credentials per stream: no pre-built "
                                "tunnels for it", chain.name, chain.isolate)
                else:
                    selector.pool = TunnelPool(chain, self.health,
                                                  self.tunnel_store)
        return selector

    def forget_policy_selectors(self) -> None:
        """The daemon's policy changed: its chains' selectors and pools go."""
        close_pools(self.selectors.values())
        self.selectors.clear()

    def all_selectors(self) -> list[Selector]:
        return [*self.selectors.values(),
                *(sel for session in self.open.values()
                  for sel in session.selectors.values())]

    def hang_up(self) -> None:
        """Shutdown: every command's connection closed (its handler sees EOF and ends
        the session)."""
        for session in list(self.open.values()):
            session.writer.close()


def _say_isolation(chain: ChainSpec) -> None:
    """Once per chain (and policy load): which of an isolating chain's hops cannot be
    isolated (SOCKS4 carries no password) or keep their written credentials."""
    if chain.isolate == "none":
        return
    for hop in chain.hops:
        if isolatable(hop):
            continue
        if not isolatable(dataclasses.replace(hop, user="")):
            log.warning("chain %s: hop %s is %s: no stream isolation there (only "
                        "SOCKS5 carries credentials)", chain.name, hop, hop.scheme)
        else:
            log.info("chain %s: hop %s keeps its written credentials: not isolated "
                     "per %s", chain.name, hop, chain.isolate)


def close_pools(selectors: Iterable[Selector]) -> None:
    for selector in selectors:
        if selector.pool is not None:
            selector.pool.close()

"""The chains as `socksifyd status` shows them: the daemon policy's and the
sessions', each hop's health and each pool's state."""

from __future__ import annotations

import sys
from typing import Any

from ..chains import ChainSpec, Selector
from .router import Router


def chains_status(router: Router, uid: int | None = None) -> list[dict[str, Any]]:
    """The chains uid may see (the daemon policy's, and its own sessions'), with
    each hop's state and each pool's."""
    chains: list[tuple[ChainSpec, str, Selector | None]] = []
    if router.policy is not None:
        chains += [(c, "policy", router.sessions.selectors.get(c.name))
                   for c in router.policy.chains.values()]
    for session in router.sessions.open.values():
        if not router.sees_all(uid) and session.uid != uid:
            continue
        if session.policy is not None:
            chains += [(c, "session", session.selectors.get(c.name))
                       for c in session.policy.chains.values()]
    out = []
    for spec, origin, selector in chains:
        hops = []
        for hop in spec.hops:
            retry = router.health.retry_in(hop)
            hops.append({"url": str(hop), "state": "down" if retry else "up",
                         "retry_in": retry})
        pool = selector.pool if selector is not None else None
        # the Windows DLL has no handoff: every connection is relayed there
        data_path = "relay" if sys.platform == "win32" else spec.data_path
        out.append({"name": spec.name, "strategy": spec.strategy.value,
                    "origin": origin, "hops": hops, "data_path": data_path,
                    "prebuilt": pool.describe() if pool is not None else None})
    return out

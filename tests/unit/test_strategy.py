"""Which hops each strategy picks, and the shared health that makes dynamic chains
skip a dead hop."""

import random

import pytest

from socksify.chains import ChainSpec, HopHealth, Selector, Strategy
from socksify.proxies import Proxy

HOPS = tuple(Proxy("socks4", f"10.0.0.{i}", 1080) for i in range(1, 5))


def selector(strategy: Strategy, chain_len: int | None = None,
             health: HopHealth | None = None) -> Selector:
    return Selector(ChainSpec("t", HOPS, strategy, chain_len), health or HopHealth(),
                    random.Random(7))


def test_strict_is_all_hops_in_order_and_never_retries() -> None:
    s = selector(Strategy.STRICT)
    assert s.next_route(set()) == HOPS
    assert s.next_route({HOPS[1]}) is None


def test_strict_ignores_health() -> None:
    health = HopHealth()
    health.mark_down(HOPS[0])
    assert selector(Strategy.STRICT, health=health).next_route(set()) == HOPS


def test_dynamic_skips_excluded_and_down_hops_in_order() -> None:
    health = HopHealth()
    s = selector(Strategy.DYNAMIC, health=health)
    assert s.next_route({HOPS[1]}) == (HOPS[0], HOPS[2], HOPS[3])
    health.mark_down(HOPS[2])
    assert s.next_route({HOPS[1]}) == (HOPS[0], HOPS[3])
    assert s.next_route(set(HOPS)) is None


def test_dynamic_tries_down_hops_when_nothing_else_is_left() -> None:
    health = HopHealth()
    for hop in HOPS:
        health.mark_down(hop)
    assert selector(Strategy.DYNAMIC, health=health).next_route(set()) == HOPS


def test_random_draws_chain_len_distinct_hops() -> None:
    s = selector(Strategy.RANDOM, chain_len=2)
    seen = set()
    for _ in range(50):
        route = s.next_route(set())
        assert route is not None and len(route) == 2 and len(set(route)) == 2
        seen.add(route)
    assert len(seen) > 3  # it really varies
    assert all(HOPS[0] not in (s.next_route({HOPS[0]}) or ()) for _ in range(20))


def test_random_gives_up_when_too_few_hops_remain() -> None:
    assert selector(Strategy.RANDOM, chain_len=3).next_route(set(HOPS[:2])) is None


def test_round_robin_rotates_the_start() -> None:
    s = selector(Strategy.ROUND_ROBIN, chain_len=2)
    routes = [s.next_route(set()) for _ in range(5)]
    assert routes == [HOPS[0:2], HOPS[1:3], HOPS[2:4], (HOPS[3], HOPS[0]), HOPS[0:2]]


def test_health_backoff_doubles_and_recovers() -> None:
    health = HopHealth(backoff=10.0, max_backoff=25.0)
    health.mark_down(HOPS[0])
    assert health.is_down(HOPS[0]) and not health.is_down(HOPS[1])
    first = health.snapshot()["10.0.0.1:1080"]
    health.mark_down(HOPS[0])
    assert health.snapshot()["10.0.0.1:1080"] > first + 5
    health.mark_down(HOPS[0])
    assert health.snapshot()["10.0.0.1:1080"] <= 25.0
    health.mark_up(HOPS[0])
    assert not health.is_down(HOPS[0]) and health.snapshot() == {}


@pytest.mark.parametrize("kwargs", [{"chain_len": 0}, {"chain_len": 5},
                                    {"connect_timeout": 0}])
def test_spec_validation(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ChainSpec("t", HOPS, Strategy.RANDOM, **kwargs)  # type: ignore[arg-type]

"""FeedCache against a real Redis: one computation per key under concurrent misses (also across
processes, via the Redis lock), invalidation by generation, and no-cache degradation when Redis dies."""
from __future__ import annotations

import asyncio
import time

import pytest

from feature_store.online import user_tag
from serving.cache import FeedCache
from support.local_server import free_port, is_cluster, redis_url_of
from serving.redis_link import RedisLink

pytestmark = pytest.mark.redis_backends  # every Redis test here runs on one node and on a cluster


async def _link(redis_server) -> RedisLink:  # noqa: ANN001
    link = RedisLink.connect(redis_url_of(redis_server), cluster=is_cluster(redis_server))
    await link.start()
    return link


def _counting_compute(counter: list[int], delay: float = 0.05):
    async def compute(_prefetched=None) -> bytes:
        counter.append(1)
        await asyncio.sleep(delay)
        return b'["1"]\n{"items":[]}'
    return compute


def test_concurrent_misses_in_two_processes_compute_once(redis_server, redis_namespace):
    async def scenario() -> tuple[list[int], set]:
        # Two caches with separate clients stand for two server processes sharing one Redis.
        links = [await _link(redis_server) for _ in range(2)]
        # generous lock lifetime and wait: on a busy machine the holder may take longer than the
        # default 300 ms wait, and then the other process computes too (by design, not what this tests)
        caches = [FeedCache(link, redis_namespace, ttl_s=60, lock_ttl_ms=60_000, lock_wait_ms=30_000) for link in links]
        calls: list[int] = []
        compute = _counting_compute(calls)
        results = await asyncio.gather(*[caches[i % 2].get_or_compute("u1", "v1:A:20", compute) for i in range(30)])
        for link in links:
            await link.close()
        return calls, {outcome for _, outcome in results}

    calls, outcomes = asyncio.run(scenario())
    assert len(calls) == 1
    assert outcomes <= {"miss", "coalesced"} and "coalesced" in outcomes


def test_invalidation_hides_every_cached_answer_of_the_user(redis_server, redis_namespace):
    async def scenario() -> list[str]:
        link = await _link(redis_server)
        cache = FeedCache(link, redis_namespace, ttl_s=60)
        calls: list[int] = []
        outcomes = [(await cache.get_or_compute("u2", scope, _counting_compute(calls, 0)))[1]
                    for scope in ("v1:A:20", "v1:A:20", "v1:A:5")]
        await cache.invalidate(["u2"])
        outcomes += [(await cache.get_or_compute("u2", scope, _counting_compute(calls, 0)))[1]
                     for scope in ("v1:A:20", "v1:A:5")]
        outcomes.append((await cache.get_or_compute("someone-else", "v1:A:20", _counting_compute(calls, 0)))[1])
        await link.close()
        return outcomes

    assert asyncio.run(scenario()) == ["miss", "hit", "miss", "miss", "miss", "miss"]


def test_unreachable_redis_degrades_to_computing_without_cache():
    async def scenario() -> tuple[list[str], float]:
        link = RedisLink.connect(f"redis://127.0.0.1:{free_port()}", timeout_s=0.1, retry_after_s=30)
        cache = FeedCache(link, "dead", ttl_s=60)
        started = time.perf_counter()
        outcomes = [(await cache.get_or_compute("u", "v1", _counting_compute([], 0)))[1] for _ in range(50)]
        ok = await cache.invalidate(["u"])
        await link.close()
        return outcomes + [str(ok)], time.perf_counter() - started

    outcomes, seconds = asyncio.run(scenario())
    assert set(outcomes[:-1]) == {"bypass"} and outcomes[-1] == "False"
    assert seconds < 2.0, "a dead Redis must cost one timeout per pause, not one per request"


@pytest.mark.parametrize("failure", [RuntimeError("model blew up")])
def test_a_failed_computation_reaches_every_waiter_and_is_not_cached(redis_server, redis_namespace, failure):
    async def scenario() -> tuple[int, str]:
        link = await _link(redis_server)
        cache = FeedCache(link, redis_namespace, ttl_s=60)

        async def broken(_prefetched=None) -> bytes:
            await asyncio.sleep(0.02)
            raise failure

        results = await asyncio.gather(*[cache.get_or_compute("u3", "v1", broken) for _ in range(5)],
                                       return_exceptions=True)
        _, outcome = await cache.get_or_compute("u3", "v1", _counting_compute([], 0))
        await link.close()
        return sum(r is failure for r in results), outcome

    assert asyncio.run(scenario()) == (5, "miss")


def test_a_miss_hands_the_prefetched_list_to_the_computation(redis_server, redis_namespace):
    listed = f"{redis_namespace}:list:{user_tag('u4')}"  # a key of the user's: the lookup script's slot
    redis_server.delete(listed)
    redis_server.rpush(listed, b"c", b"b", b"a")

    async def scenario() -> list:
        link = await _link(redis_server)
        cache = FeedCache(link, redis_namespace, ttl_s=60)
        seen: list = []

        async def compute(prefetched) -> bytes:
            seen.append(prefetched)
            return b"[]\n{}"

        for _ in range(2):  # the second call is a hit: nothing computed, nothing prefetched
            await cache.get_or_compute("u4", "v1", compute, prefetch=(listed, 2))
        await link.close()
        return seen

    assert asyncio.run(scenario()) == [[b"c", b"b"]]

"""The feed miss path's shared work. Micro-batching of the user tower (serving.batching): misses
ready in the same event-loop turn share one encoder call, each gets exactly the vector it would get
alone, and a failing history fails only its own request. Merging the index's hits with the
boosted unseen items and the live items (serving.retriever.merge_hits)."""
from __future__ import annotations

import asyncio

import numpy as np
import pytest

from recsys.artifact import MeanPoolUserEncoder
from serving.batching import UserVectorBatcher
from serving.retriever import merge_hits


class RecordingEncoder(MeanPoolUserEncoder):
    """The real mean-pool encoder, recording the size of each call."""

    def __init__(self, item_vectors: np.ndarray):
        super().__init__(item_vectors)
        self.calls: list[int] = []

    def encode(self, histories, timestamps=None):  # noqa: ANN001, ANN201
        self.calls.append(len(histories))
        return super().encode(histories, timestamps)


def _encoder(n_items: int = 50, dim: int = 8) -> RecordingEncoder:
    vectors = np.random.default_rng(0).normal(size=(n_items, dim)).astype(np.float32)
    return RecordingEncoder(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))


def test_concurrent_requests_share_one_call_and_get_their_own_vectors() -> None:
    encoder = _encoder()
    histories = [[1, 2, 3], [4], [5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]

    async def scenario() -> list[np.ndarray]:
        batcher = UserVectorBatcher()
        return await asyncio.gather(*[batcher.user_vector(encoder, h, [float(t) for t in range(len(h))])
                                      for h in histories])

    vectors = asyncio.run(scenario())
    assert encoder.calls == [len(histories)], "requests ready together must share one encoder call"
    expected = MeanPoolUserEncoder(encoder.item_vectors).encode(histories)
    for got, want in zip(vectors, expected):
        np.testing.assert_array_equal(got, want)


def test_batches_are_capped_and_a_lone_request_is_encoded_alone() -> None:
    encoder = _encoder()

    async def scenario() -> None:
        batcher = UserVectorBatcher(max_batch=4)
        await asyncio.gather(*[batcher.user_vector(encoder, [i, i + 1]) for i in range(10)])
        await batcher.user_vector(encoder, [3])

    asyncio.run(scenario())
    assert encoder.calls == [4, 4, 2, 1]


def test_a_failing_history_fails_only_its_own_request() -> None:
    encoder = _encoder(n_items=20)

    async def scenario() -> list:
        batcher = UserVectorBatcher()
        return await asyncio.gather(batcher.user_vector(encoder, [1, 2]), batcher.user_vector(encoder, [999]),
                                    batcher.user_vector(encoder, [3]), return_exceptions=True)

    first, bad, third = asyncio.run(scenario())
    assert isinstance(bad, IndexError)
    np.testing.assert_array_equal(first, MeanPoolUserEncoder(encoder.item_vectors).encode([[1, 2]])[0])
    np.testing.assert_array_equal(third, MeanPoolUserEncoder(encoder.item_vectors).encode([[3]])[0])


def test_a_cancelled_request_is_not_encoded() -> None:
    encoder = _encoder()

    async def scenario() -> np.ndarray:
        batcher = UserVectorBatcher()
        gone = asyncio.ensure_future(batcher.user_vector(encoder, [1, 2]))
        kept = asyncio.ensure_future(batcher.user_vector(encoder, [3, 4]))
        await asyncio.sleep(0)  # both queued
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        return await kept

    vector = asyncio.run(scenario())
    assert encoder.calls == [1]
    np.testing.assert_array_equal(vector, MeanPoolUserEncoder(encoder.item_vectors).encode([[3, 4]])[0])


def _merge_by_dict(parts: list[tuple[np.ndarray, np.ndarray]], k: int) -> tuple[list[int], list[float]]:
    """The definition: each index once at its best score, best first, ties in order of first appearance."""
    best: dict[int, float] = {}
    for ids, scores in parts:
        for index, score in zip(ids.tolist(), scores.tolist()):
            if score > best.get(index, -np.inf):
                best[index] = score
    order = sorted(best, key=lambda i: -best[i])[:k]
    return order, [best[i] for i in order]


@pytest.mark.parametrize("seed", range(20))
def test_merge_keeps_each_item_once_at_its_best_score(seed: int) -> None:
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(int(rng.integers(2, 4))):
        n = int(rng.integers(0, 30))
        ids = rng.choice(60, size=n, replace=False).astype(np.int64)  # overlapping ids across parts
        scores = np.sort(rng.choice(np.linspace(-1, 1, 41), size=n))[::-1].astype(np.float32)  # ties too
        parts.append((ids, scores))
    k = int(rng.integers(1, 40))
    hits = merge_hits(parts, k)
    want_ids, want_scores = _merge_by_dict(parts, k)
    np.testing.assert_array_equal(hits.indexes, np.asarray(want_ids, np.int64))
    np.testing.assert_array_equal(hits.scores, np.asarray(want_scores, np.float32))


def test_a_batcher_outlives_its_event_loop() -> None:
    """A loop that stops with a flush still scheduled (tests run several loops) must not stall the next."""
    encoder = _encoder()
    batcher = UserVectorBatcher()
    loop = asyncio.new_event_loop()
    queued = []
    loop.call_soon(lambda: queued.append(loop.create_task(batcher.user_vector(encoder, [1, 2]))))  # turn 1: queues it
    loop.call_soon(lambda: loop.call_soon(loop.stop))  # stops at the end of turn 1, before the flush's turn
    loop.run_forever()
    assert batcher._turn._scheduled, "the scenario: the old loop stopped with a flush pending"
    queued[0].cancel()
    loop.close()
    vector = asyncio.run(asyncio.wait_for(batcher.user_vector(encoder, [3, 4]), timeout=30))
    np.testing.assert_array_equal(vector, MeanPoolUserEncoder(encoder.item_vectors).encode([[3, 4]])[0])


def test_unseen_items_vectors_are_gathered_only_when_a_prior_is_applied(tmp_path) -> None:
    """At 10M synthetic items the never-interacted items' copy was 2.1 GB that a server without a
    new-item prior never reads: it is taken on the first boosted search, and scores with it are the
    exact dot products plus the boost."""
    from serving.retriever import Retriever
    from support.sample_runs import tiktok_mean_pool_run

    retriever = Retriever.load(tiktok_mean_pool_run(tmp_path / "run"), index_store=tmp_path / "index")
    assert len(retriever.unseen) > 0, "TikTok has items without train interactions"
    query = np.asarray(retriever.item_vector(int(retriever.unseen[0])), np.float32)
    retriever.search(query, 10, boost=0.0)
    assert "unseen_vectors" not in vars(retriever), "no prior: no copy"
    hits = retriever.search(query, 10, boost=0.5)
    np.testing.assert_array_equal(retriever.unseen_vectors, np.asarray(retriever.run.item_vectors)[retriever.unseen])
    boosted = [(i, s) for i, s in zip(hits.indexes.tolist(), hits.scores.tolist()) if i in set(retriever.unseen.tolist())]
    assert boosted and boosted[0][0] == int(retriever.unseen[0]), "the query's own item, boosted, ranks first"
    for index, score in boosted:
        assert score == pytest.approx(float(retriever.item_vector(index) @ query) + 0.5, abs=1e-5)

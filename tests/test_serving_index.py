"""The nearest-neighbour index: approximate recall against exact search, filters that never leak
other media, and no short lists when most top hits are filtered out or excluded."""
from __future__ import annotations

import numpy as np
import pytest

from serving.coldstart import cold_start_list
from serving.index import AllowedItems, IndexConfig, ItemIndex, plan_index
from support.sample_runs import synthetic_catalogue, synthetic_histories

N, D = 10_000, 64


@pytest.fixture(scope="module")
def data():
    """A clustered catalogue and user-like queries (mean-pools of coherent 1-3 topic histories)."""
    vectors, labels = synthetic_catalogue(N, D, seed=3, n_clusters=300)
    queries = np.stack([vectors[h].mean(0) for h in synthetic_histories(labels, 300, seed=4)])
    return vectors, queries / np.linalg.norm(queries, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def indexes(data):
    """One index per kind for the whole module (building is the slow part)."""
    return {kind: ItemIndex(data[0], IndexConfig(kind=kind)) for kind in ("flat", "hnsw", "ivf")}


def recall_at(index: ItemIndex, queries: np.ndarray, k: int = 20) -> float:
    approx, _ = index.search_batch(queries, k)
    exact, _ = index.exact_batch(queries, k)
    return float(np.mean([len(set(a) & set(e)) / k for a, e in zip(approx, exact)]))


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_index_recall_at_20_is_at_least_095(data, indexes, kind):
    index, queries = indexes[kind], data[1]
    assert index.kind == kind
    assert recall_at(index, queries) >= 0.95


def test_auto_uses_exact_search_for_small_catalogues(data):
    index = ItemIndex(data[0][:5000], IndexConfig(kind="auto", exact_max_items=50_000))
    assert index.kind == "flat" and recall_at(index, data[1][:50]) == 1.0


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
@pytest.mark.parametrize("share", [0.5, 0.02, 0.0005])
def test_filters_return_k_allowed_items_even_when_most_top_hits_are_filtered(data, indexes, kind, share):
    vectors, queries = data
    index = indexes[kind]
    mask = np.random.default_rng(5).random(N) < share
    allowed = AllowedItems(mask)
    exact_pool = np.flatnonzero(mask)
    for query in queries[:20]:
        exclude = index.search(query, 10)[0]  # the unfiltered best ten are "seen"
        ids, scores = index.search(query, 20, allowed, exclude)
        assert len(ids) == min(20, len(np.setdiff1d(exact_pool, exclude)))
        assert mask[ids].all() and not np.isin(ids, exclude).any()
        assert np.all(np.diff(scores) <= 1e-6)
        if kind == "flat" or share < 0.01:  # exact path: must equal brute force over the subset
            pool = np.setdiff1d(exact_pool, exclude)
            best = pool[np.argsort(-(vectors[pool] @ query))[:20]]
            assert set(ids) == set(best)


def test_excluding_more_items_than_k_still_fills_the_list(data, indexes):
    queries, index = data[1], indexes["hnsw"]
    exclude = index.search(queries[0], 200)[0]
    ids, _ = index.search(queries[0], 20, None, exclude)
    assert len(ids) == 20 and not np.isin(ids, exclude).any()


def test_cold_start_list_is_popular_yet_more_diverse_than_pure_popularity(data):
    vectors = data[0][:5000]
    popularity = np.random.default_rng(6).zipf(1.5, 5000).astype(float)
    mmr = cold_start_list(vectors, popularity, None, pool=300, n=20, lam=0.5)
    top = np.argsort(-popularity, kind="stable")[:20]

    def mean_similarity(ids):
        sims = vectors[ids] @ vectors[ids].T
        return (sims.sum() - len(ids)) / (len(ids) * (len(ids) - 1))

    assert len(set(mmr)) == 20 and np.isin(mmr, np.argsort(-popularity, kind="stable")[:300]).all()
    assert mean_similarity(mmr) < mean_similarity(top)


def test_auto_picks_hnsw_when_a_small_catalogues_vectors_are_wide():
    """Exact scans cost n x d per query: wide vectors (an ensemble's concatenation) get HNSW."""
    config = IndexConfig(kind="auto")
    assert config.resolve(5_000, 64) == "flat"
    assert config.resolve(6_710, 771) == "hnsw"
    assert config.resolve(1_000_000, 64) == "ivf"
    rng = np.random.default_rng(3)
    wide = rng.normal(size=(3_000, 800)).astype(np.float32)
    wide /= np.linalg.norm(wide, axis=1, keepdims=True)
    queries = wide[rng.choice(3_000, 50, replace=False)] + 0.01 * rng.normal(size=(50, 800)).astype(np.float32)  # near an item
    index = ItemIndex(wide, config)
    assert index.kind == "hnsw" and recall_at(index, queries) >= 0.95


# --- the automatic choice (`plan_index`) and the build-time calibration of the search knob ---

GiB = 2**30


def test_plan_picks_exact_then_hnsw_then_ivf_by_size_and_width():
    config = IndexConfig()
    assert plan_index(5_000, 64, config, available_bytes=16 * GiB).kind == "flat"
    assert plan_index(6_710, 771, config, available_bytes=16 * GiB).kind == "hnsw"
    big = plan_index(1_000_000, 64, config, available_bytes=16 * GiB)
    assert big.kind == "ivf" and big.nlist == 4000 and "budget" in big.reason
    assert plan_index(10_000_000, 64, config, available_bytes=16 * GiB).nlist == config.ivf_max_nlist


def test_plan_falls_back_to_smaller_ivf_layouts_when_memory_is_short():
    """10M x 64: float32 lists need ~2.5 GiB, 8-bit lists ~0.7 GiB, 16-byte PQ codes ~0.23 GiB."""
    assert plan_index(10_000_000, 64, IndexConfig(), available_bytes=16 * GiB).kind == "ivf"  # budget 4 GiB
    assert plan_index(10_000_000, 64, IndexConfig(), available_bytes=4 * GiB).kind == "ivf_sq8"  # budget 1 GiB
    assert plan_index(10_000_000, 64, IndexConfig(memory_budget_bytes=300 * 2**20)).kind == "ivf_pq"
    squeezed = plan_index(10_000_000, 64, IndexConfig(memory_budget_bytes=50 * 2**20))
    assert squeezed.kind == "ivf_pq" and "nothing fits" in squeezed.reason and squeezed.pq_bytes == 16
    plan = plan_index(10_000_000, 64, IndexConfig(memory_budget_bytes=8 * GiB), available_bytes=1)
    assert plan.memory_budget_bytes == 8 * GiB and plan.kind == "ivf"  # an explicit budget wins over the machine's
    for kind in ("ivf", "ivf_sq8", "ivf_pq"):
        assert plan_index(10_000_000, 64, IndexConfig(kind=kind)).kind == kind
    with pytest.raises(ValueError, match="unknown index kind"):
        IndexConfig(kind="annoy")


@pytest.fixture(scope="module")
def users(data):
    """Two disjoint samples of user-like queries: one tunes the index (the run's users), one checks it."""
    vectors, labels = synthetic_catalogue(N, D, seed=3, n_clusters=300)
    pools = [np.stack([vectors[h].mean(0) for h in synthetic_histories(labels, 300, seed=s)]) for s in (11, 12)]
    return [p / np.linalg.norm(p, axis=1, keepdims=True) for p in pools]


@pytest.mark.parametrize("kind", ["hnsw", "ivf", "ivf_sq8", "ivf_pq"])
def test_the_calibrated_knob_reaches_the_target_recall_for_users_outside_the_sample(data, users, kind):
    tune, held_out = users
    index = ItemIndex(data[0], IndexConfig(kind=kind), user_vectors=tune)
    report = index.describe()
    knob = "efSearch" if kind == "hnsw" else "nprobe"
    assert set(report["search_params"]) == {knob} and report["recall_at_20"] >= 0.95 and report["recall_queries"] == 300
    assert recall_at(index, held_out) >= 0.95
    if kind != "hnsw":  # the cheapest knob that does it, not the ladder's top
        assert report["search_params"]["nprobe"] < index.plan.nlist


def test_a_fixed_knob_is_kept_and_its_recall_reported(data, users):
    index = ItemIndex(data[0], IndexConfig(kind="ivf", ivf_nprobe=1), user_vectors=users[0])
    assert index.search_params == {"nprobe": 1}
    assert index.describe()["recall_at_20"] == pytest.approx(recall_at(index, users[0]), abs=1e-3)


def test_a_stored_index_and_its_calibration_are_reused_by_the_next_process(data, users, tmp_path):
    first = ItemIndex(data[0], IndexConfig(kind="ivf"), store=tmp_path, mmap=False, user_vectors=users[0])
    assert list(tmp_path.glob("*.tuned-*.json")) and first.describe()["source"] == "read"
    second = ItemIndex(data[0], IndexConfig(kind="ivf"), store=tmp_path, mmap=True, user_vectors=users[0])
    assert second.describe()["source"] == "mapped"
    assert second.search_params == first.search_params and second.recall == first.recall


def test_an_unreadable_stored_calibration_is_redone_not_a_rebuild(data, users, tmp_path):
    first = ItemIndex(data[0], IndexConfig(kind="ivf"), store=tmp_path, mmap=False, user_vectors=users[0])
    (tuned,) = tmp_path.glob("*.tuned-*.json")
    tuned.write_text('{"search_params": ')  # a torn write
    again = ItemIndex(data[0], IndexConfig(kind="ivf"), store=tmp_path, mmap=False, user_vectors=users[0])
    assert again.describe()["source"] == "read" and again.shared_file == first.shared_file
    assert again.search_params == first.search_params and "recall" in tuned.read_text()


def test_users_without_history_fall_back_to_synthetic_calibration_queries(data):
    zero_users = np.zeros((500, D), dtype=np.float32)  # users with no history encode to zero rows
    index = ItemIndex(data[0], IndexConfig(kind="ivf"), user_vectors=zero_users)
    assert index.recall_queries == 300 and index.recall >= 0.95

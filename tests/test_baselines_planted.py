"""Baselines recover a planted pattern: popularity order, item co-occurrence, user clusters."""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recsys.baselines import BASELINES, make_baseline, register_baseline
from recsys.baselines.bpr import BPRMF, sample_negatives
from recsys.baselines.itemknn import ItemKNN, similarity_top_k
from recsys.baselines.most_popular import MostPopular
from recsys.baselines.base import interaction_matrix
from recsys.data.schema import Dataset


def make_dataset(pairs: list[tuple[int, int]], n_items: int) -> tuple[Dataset, pl.DataFrame]:
    """A Dataset of (user, item) train pairs; every row is `train`."""
    users, items = zip(*pairs)
    inter = pl.DataFrame({"user_id": [f"u{u}" for u in users], "item_id": [f"i{i}" for i in items],
                          "user_index": pl.Series(users, dtype=pl.Int32), "item_index": pl.Series(items, dtype=pl.Int32),
                          "timestamp": pl.Series(range(len(pairs)), dtype=pl.Int64), "split": ["train"] * len(pairs)})
    item_table = pl.DataFrame({"item_id": [f"i{i}" for i in range(n_items)],
                               "item_index": pl.Series(range(n_items), dtype=pl.Int32),
                               "media": [["text"]] * n_items})
    return Dataset("planted", item_table, inter), inter


def two_clusters(n_users: int = 40, n_items: int = 20, per_user: int = 6, seed: int = 0) -> list[tuple[int, int]]:
    """Even users consume items 0..9, odd users items 10..19."""
    rng = np.random.default_rng(seed)
    out = []
    for u in range(n_users):
        block = np.arange(10) + (10 if u % 2 else 0)
        out += [(u, int(i)) for i in rng.choice(block, size=per_user, replace=False)]
    assert n_items == 20
    return out


def clusters_with_valid() -> Dataset:
    """`two_clusters` with 8 pairs per user, each user's last two held out as `valid`."""
    ds, _ = make_dataset(two_clusters(per_user=8), n_items=20)
    inter = ds.interactions.with_columns(
        pl.when(pl.int_range(pl.len()).over("user_index") >= 6).then(pl.lit("valid")).otherwise(pl.lit("train"))
        .alias("split"))
    return Dataset("planted", ds.items, inter)


def test_most_popular_ranks_by_train_count():
    ds, train = make_dataset([(0, 2), (1, 2), (2, 2), (0, 1), (1, 1), (2, 0)], n_items=4)
    scores = MostPopular().fit(ds, train).score(np.array([0, 1]))
    assert scores.shape == (2, 4) and scores.dtype == np.float32
    assert scores[0].argsort()[::-1].tolist() == [2, 1, 0, 3]
    assert (scores[0] == scores[1]).all()


def test_itemknn_similarity_is_shrunk_cosine_with_top_k_per_target():
    # Items 0 and 1 always co-occur (cosine 1); item 2 shares one of item 0's two users (cosine 1/sqrt(2)).
    x = interaction_matrix(pl.DataFrame({"user_index": [0, 0, 1, 1, 1], "item_index": [0, 1, 0, 1, 2]}), 2, 3)
    w = similarity_top_k(x, k=2, shrink=0.0).toarray()
    assert np.diag(w).tolist() == [0, 0, 0]
    assert w[0, 1] == pytest.approx(1.0) and w[0, 2] == pytest.approx(1 / np.sqrt(2))
    shrunk = similarity_top_k(x, k=2, shrink=2.0).toarray()
    assert shrunk[0, 1] == pytest.approx(2 / (2 + 2))
    top1 = similarity_top_k(x, k=1, shrink=0.0).toarray()
    assert (np.count_nonzero(top1, axis=0) <= 1).all()
    assert top1[1, 0] == pytest.approx(1.0)  # item 0's single neighbour is item 1


@pytest.mark.parametrize("name", ["itemknn", "bpr-mf", "ease", "gf-cf"])
def test_personalised_baselines_rank_the_users_own_cluster_first(name: str):
    ds, train = make_dataset(two_clusters(), n_items=20)
    model = make_baseline(name, dataset=None, **({"epochs": 60, "lr": 0.02} if name == "bpr-mf" else {}))
    scores = model.fit(ds, train).score(np.arange(40))
    seen = interaction_matrix(train, 40, 20).toarray() > 0
    scores[seen] = -np.inf
    top4 = np.argsort(-scores, axis=1)[:, :4]
    own_cluster = (top4 >= 10) == (np.arange(40)[:, None] % 2 == 1)
    assert own_cluster.mean() > 0.95


def test_bpr_is_deterministic_for_a_seed():
    ds, train = make_dataset(two_clusters(), n_items=20)
    a = BPRMF(epochs=3, dim=8).fit(ds, train).score(np.arange(5))
    b = BPRMF(epochs=3, dim=8).fit(ds, train).score(np.arange(5))
    c = BPRMF(epochs=3, dim=8, seed=1).fit(ds, train).score(np.arange(5))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_negative_sampling_avoids_consumed_items():
    users = np.repeat(np.arange(3), 1000)
    seen = np.sort(np.array([u * 5 + i for u in range(3) for i in range(4)]))  # each user saw items 0..3 of 5
    neg = sample_negatives(users, seen, 5, np.random.default_rng(0))
    assert (neg == 4).all()


def test_itemknn_orders_unvoted_items_by_popularity():
    ds, train = make_dataset([(0, 0), (1, 0), (1, 1), (2, 2), (3, 2), (4, 2)], n_items=5)
    scores = ItemKNN(k=5, shrink=0.0).fit(ds, train).score(np.array([0]))[0]
    assert scores[1] > scores[2] > scores[3]  # 1 co-occurs with 0; 2 is popular; 3 and 4 never seen
    assert scores[3] == scores[4]


def test_plugins_can_register_a_baseline_by_name():
    register_baseline("constant-test", lambda dataset=None, **kw: MostPopular())
    try:
        assert isinstance(make_baseline("constant-test"), MostPopular)
    finally:
        BASELINES.pop("constant-test")
    with pytest.raises(KeyError, match="unknown baseline"):
        make_baseline("no-such-baseline")


@pytest.mark.parametrize("name", ["lightgcn", "lightgcn++"])
def test_lightgcn_ranks_the_users_own_cluster_first(name: str):
    ds, train = make_dataset(two_clusters(), n_items=20)
    scores = make_baseline(name, dataset=None, epochs=60, lr=0.02).fit(ds, train).score(np.arange(40))
    scores[interaction_matrix(train, 40, 20).toarray() > 0] = -np.inf
    top4 = np.argsort(-scores, axis=1)[:, :4]
    assert ((top4 >= 10) == (np.arange(40)[:, None] % 2 == 1)).mean() > 0.95


@pytest.mark.parametrize("name", ["bpr-mf", "lightgcn", "lightgcn++"])
def test_learned_baselines_keep_their_best_valid_epoch_and_stop_on_patience(name: str):
    # Each user's last two pairs are held out as valid: the epoch must be chosen on them.
    ds = clusters_with_valid()
    model = make_baseline(name, dataset=None, epochs=300, lr=0.02, eval_every=5, patience=3)
    model.fit(ds, ds.split("train"))
    history = model.valid_history
    best_at = int(np.argmax([score for _, score in history]))
    assert model.best_epoch == history[best_at][0]
    assert len(history) == best_at + 1 + 3 and history[-1][0] < 300  # stopped by patience, not by the cap
    from recsys.metrics import evaluate_scores
    kept = evaluate_scores(model.score, ds.split("valid"), ds.split("train"), 20, ks=(20,))["ndcg@20"]
    assert kept == pytest.approx(history[best_at][1])


def test_sasrec_learns_an_order_pattern_and_picks_its_epoch_on_valid():
    # Every user walks the items in a cycle (i, i+1, i+2, ...); the held-out valid item is the next
    # step. Only the *order* says which item comes next: a set-based model cannot tell.
    from recsys.baselines.base import user_sequences
    from recsys.baselines.sasrec import SASRec, training_windows

    rng = np.random.default_rng(0)
    pairs, split = [], []
    for u in range(60):
        start = int(rng.integers(0, 20))
        walk = [(start + t) % 20 for t in range(9)]
        pairs += [(u, i) for i in walk]
        split += ["train"] * 8 + ["valid"]
    ds, _ = make_dataset(pairs, n_items=20)
    ds = Dataset("planted", ds.items, ds.interactions.with_columns(pl.Series("split", split)))
    train = ds.split("train")
    assert user_sequences(train, 60)[0].tolist() == [p[1] for p in pairs[:8]]
    assert isinstance(make_baseline("sasrec", dataset="ml-100k"), SASRec)  # `recsys evaluate --baseline sasrec`
    model = SASRec(dim=16, max_len=10, lr=0.01, epochs=60, eval_every=5, patience=3, batch_size=32).fit(ds, train)
    scores = model.score(np.arange(60))
    scores[interaction_matrix(train, 60, 20).toarray() > 0] = -np.inf
    expected = (np.array([pairs[u * 9 + 7][1] for u in range(60)]) + 1) % 20
    assert (scores.argmax(1) == expected).mean() > 0.9
    assert model.best_epoch == max(model.valid_history, key=lambda h: h[1])[0]
    # tokens are item + 1 (0 pads); the 6 transitions of 7 items, each once, newest window first
    inputs, targets, _ = training_windows([np.arange(7)], max_len=3)
    assert inputs.tolist() == [[4, 5, 6], [1, 2, 3]] and targets.tolist() == [[5, 6, 7], [2, 3, 4]]
    inputs, targets, _ = training_windows([np.arange(5)], max_len=3)
    assert inputs.tolist() == [[2, 3, 4], [0, 0, 1]] and targets.tolist() == [[3, 4, 5], [0, 0, 2]]


def test_ease_solves_the_zero_diagonal_ridge_regression_and_picks_lambda_on_valid():
    from recsys.baselines.ease import EASE, solve
    from recsys.metrics import evaluate_scores

    x = interaction_matrix(pl.DataFrame({"user_index": [0, 0, 1, 1, 1, 2], "item_index": [0, 1, 0, 1, 2, 2]}), 3, 3)
    gram = (x.T @ x).toarray().astype(np.float64)
    b = solve(gram, 1.0).astype(np.float64)
    assert np.diag(b).tolist() == [0.0, 0.0, 0.0]
    # Each column j is the ridge solution of X[:, j] on the other columns: its gradient vanishes off the diagonal.
    dense = x.toarray().astype(np.float64)
    grad = dense.T @ (dense @ b - dense) + 1.0 * b
    off_diagonal = ~np.eye(3, dtype=bool)
    assert np.abs(grad[off_diagonal]).max() < 1e-4

    ds = clusters_with_valid()
    model = make_baseline("ease", dataset=None, lambdas=(1.0, 10.0, 1e5)).fit(ds, ds.split("train"))
    history = dict(model.valid_history)
    assert sorted(history) == [1.0, 10.0, 1e5]
    assert model.lam == max(history, key=history.get)
    kept = evaluate_scores(model.score, ds.split("valid"), ds.split("train"), 20, ks=(20,))["ndcg@20"]
    assert kept == pytest.approx(history[model.lam])
    with pytest.raises(ValueError, match="limit"):
        EASE(max_items=10).fit(ds, ds.split("train"))


def test_gfcf_scores_its_graph_filter_and_picks_alpha_and_rank_on_valid():
    """GF-CF's score of a history row r is r . (R~^T R~ + alpha D^-1/2 V_k V_k^T D^1/2), R~ = D_U^-1/2 R D_I^-1/2."""
    from recsys.baselines.gfcf import GFCF
    from recsys.metrics import evaluate_scores

    ds = clusters_with_valid()
    train = ds.split("train")
    model = GFCF(alphas=(0.0, 0.5, 5.0), ranks=(2, 8)).fit(ds, train)
    history = {(a, r): v for a, r, v in model.valid_history}
    assert set(history) == {(0.0, 2), (0.5, 2), (5.0, 2), (0.5, 8), (5.0, 8)}  # alpha 0 needs no rank
    assert (model.alpha, model.rank) == max(history, key=history.get)
    kept = evaluate_scores(model.score, ds.split("valid"), train, 20, ks=(20,))["ndcg@20"]
    assert kept == pytest.approx(history[model.alpha, model.rank])

    dense = interaction_matrix(train, 40, 20).toarray().astype(np.float64)
    d_u, d_i = dense.sum(1), dense.sum(0)
    normalised = dense / np.sqrt(d_u)[:, None] / np.sqrt(d_i)[None, :]
    _, _, vt = np.linalg.svd(normalised)
    k = model.rank
    low_pass = np.diag(d_i ** -0.5) @ vt[:k].T @ vt[:k] @ np.diag(d_i ** 0.5)
    expected = dense @ (normalised.T @ normalised + model.alpha * low_pass)
    assert np.allclose(model.score(np.arange(40)), expected, atol=1e-3)  # a randomised SVD in float32

"""Train = serve: the feed the API returns is the top-20 the evaluation harness ranks.

For a trained ML-100K run (a short two-member ensemble, text medium) and a trained TikTok run
(one short tower): the online store is materialised, with the run's feature window, from the rows
the harness ranks the held-out split from (`EvalSplit.known`: train rows, and for ML-100K's
leave-one-out test split train + valid rows, the point-in-time history after the valid event), the
run is served by a real uvicorn server against a real Redis, and for every ML-100K valid and test
user (563 of whom have more than 50 train events, more than the window) and a sample of TikTok
test users:

* the user vector the server computes (the run's encoder on the online store's window, as
  `Retriever.user_vector` does) equals the vector evaluation ranks with, to 1e-5: the run's
  `user_vectors.npy` row when the split is ranked from train events, the served encoder's vector of
  the train + valid window otherwise;
* the API's top-20 equals the harness's top-20 (`per_user_ranking_metrics` with the run's aligned
  scores, `training.evaluation_runs`), item for item, with the same masking: what the server
  excludes, the user's served window (for users within the window, all their known items).

The server's user tower runs as the ONNX Runtime export of the trained module (`/readyz` says
`user_tower_runtime` "onnxruntime"), so these feeds are what the default serving path computes.
"""
from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import httpx

from feature_store.materialize import materialize
from feature_store.store import FeatureStore, run_window
from recsys.artifact import load_run
from recsys.data import load_dataset
from recsys.metrics import per_user_ranking_metrics
from support.local_server import LocalServer, redis_url_of
from training.config import load_config
from training.evaluation_protocol import prepare_split
from training.evaluation_runs import align_run, aligned_score_fn
from training.run import train

pytestmark = pytest.mark.slow
K = 20


def _trained(tmp_path_factory, dataset: str, overrides: list[str]):
    root = tmp_path_factory.mktemp(f"parity-{dataset}")
    config = load_config(None, dataset, ["train.threads=1", "train.patience=1", *overrides])
    result = train(config, root / "run", resume=False, progress=False)
    return load_run(result.run_dir), root


def _served_as_of(run, root, redis_server, split: str):
    """Materialise the rows known when `split` is ranked into a namespace of its own; (namespace, env)."""
    namespace = f"test-parity-{run.dataset}-{split}"
    materialize(run.dataset, history_cap=run_window(run.meta), train_split=run.meta["split_strategy"],
                held_out=split, client=redis_server, namespace=namespace, offline_root=root / f"offline-{split}",
                progress=False)
    env = {"REDIS_URL": redis_url_of(redis_server), "RECSYS_REDIS_NAMESPACE": namespace,
           "RECSYS_SERVE_LOG_DIR": str(root / f"logs-{split}"), "RECSYS_USER_TOWER_RUNTIME": "onnxruntime"}
    return namespace, env


def _check_parity(run, split: str, root, redis_server, users: np.ndarray | None = None) -> int:
    """Compare server and harness for the `split` users (or `users`, dataset user indices); returns how
    many fill the window."""
    namespace, env = _served_as_of(run, root, redis_server, split)
    ds = load_dataset(run.dataset)
    ev = prepare_split(ds, split, run.meta["split_strategy"])
    store = FeatureStore(run_window(run.meta), client=redis_server, namespace=namespace)
    assert not store.check_run(run.meta), store.check_run(run.meta)
    test_users = np.unique(ev.held_out["user_index"].to_numpy()) if users is None else users
    user_ids, item_ids = ds.user_ids, ds.item_ids
    dataset_item = {item: i for i, item in enumerate(item_ids)}
    encoder = run.user_encoder
    item_index = run.item_index_by_id
    aligned = align_run(run, ev.dataset, ev.known if ev.reads_past_train else None)  # as `recsys evaluate` ranks

    # What the server reads and excludes: the online window, as dataset (user_index, item_index) pairs.
    windows = {int(u): store.online_window(user_ids[u]) for u in test_users}
    masked = pl.DataFrame({"user_index": [u for u, w in windows.items() for _ in w],
                           "item_index": [item_index[i] for w in windows.values() for i, _ in w]},
                          schema={"user_index": pl.Int64, "item_index": pl.Int64})
    held_out = ev.held_out.filter(pl.col("user_index").is_in(list(windows)))
    score_fn = aligned_score_fn(aligned, ev.popularity, served_prior=True)
    _, tops = per_user_ranking_metrics(score_fn, held_out, masked, ev.n_items, ks=(K,))
    harness_users = np.unique(held_out["user_index"].to_numpy())
    assert len(harness_users) == len(test_users)

    heavy = ties = 0
    with LocalServer(run.run_dir, env=env, log_file=root / f"server-{split}.log") as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        ready = client.get("/readyz").json()
        assert ready["status"] == "ok"
        # the feed misses below run the ONNX Runtime export of the tower (no silent fallback)
        assert [m["user_tower_runtime"] for m in ready["models"]] == ["onnxruntime"], ready["models"]
        for user, top in zip(harness_users.tolist(), tops):
            user_id = user_ids[user]
            window = windows[user]
            heavy += len(window) == run_window(run.meta)
            served = encoder.encode([[item_index[i] for i, _ in window]])[0]
            np.testing.assert_allclose(served, aligned.user_vectors[user], atol=1e-5,
                                       err_msg=f"user {user_id}: served vector != evaluated vector")
            response = client.get(f"/v1/users/{user_id}/recommendations", params={"k": K})
            assert response.status_code == 200, response.text
            api_items = [item["item_id"] for item in response.json()["items"]]
            harness_items = [item_ids[i] for i in top[:K]]
            if api_items != harness_items:  # only a different order among exactly tied scores is allowed
                scores = score_fn(np.array([user]))[0]
                scores[[dataset_item[i] for i, _ in window]] = -np.inf
                api_scores = scores[[dataset_item[i] for i in api_items]]
                assert len(set(api_items)) == K and np.all(np.isfinite(api_scores)), f"user {user_id}"
                np.testing.assert_allclose(api_scores, scores[top[:K]], atol=1e-6, rtol=0,
                                           err_msg=f"user {user_id}: API top-{K} is not the harness's top-{K}")
                ties += 1
    assert ties <= len(harness_users) // 10, f"{ties} users differ by tie order: more than ties explain"
    return heavy


@pytest.mark.timeout(1800)
def test_ml100k_feed_equals_the_evaluated_top20_for_every_valid_and_test_user(tmp_path_factory, redis_server):
    run, root = _trained(tmp_path_factory, "ml-100k", ["train.epochs=2", "train.ensemble=2"])
    assert run.meta["feature_window"]["size"] == 50 and run.meta["data_version"]
    for split in ("valid", "test"):  # test is ranked from train + valid: a store as of after the valid event
        heavy = _check_parity(run, split, root, redis_server)
        assert heavy > 500, f"only {heavy} {split} users fill the 50-event window; the heavy users must be covered"


@pytest.mark.timeout(1800)
def test_tiktok_feed_equals_the_evaluated_top20_for_a_sample_of_test_users(tmp_path_factory, redis_server):
    run, root = _trained(tmp_path_factory, "tiktok",
                         ["train.epochs=1", "train.ensemble=1", "model.dim=64", "loss.alignment_weight=0"])
    ds = load_dataset("tiktok")
    test = ds.interactions.filter(pl.col("split") == "test")
    counts = ds.interactions.filter(pl.col("split") == "train").group_by("user_index").len()
    heaviest = counts.sort("len", descending=True)["user_index"].head(20).to_numpy()
    sample = np.random.default_rng(0).choice(np.unique(test["user_index"].to_numpy()), 300, replace=False)
    users = np.intersect1d(np.union1d(sample, heaviest), np.unique(test["user_index"].to_numpy()))
    _check_parity(run, "test", root, redis_server, users)

"""Serving reads from Redis exactly what training reads from Parquet, and appends keep the cap."""
from __future__ import annotations

import time

import numpy as np
import polars as pl
import pytest

from feature_store.definitions import HIST_COUNT, HIST_ITEMS, HIST_TIMESTAMPS, ITEM_METADATA_COLUMNS
from feature_store.materialize import materialize
from feature_store.offline import get_historical_features
from feature_store.online import NoActiveVersionError, OnlineStore, OutOfOrderEventError
from feature_store.publish import publish_version
from recsys.data import load_dataset

pytestmark = pytest.mark.redis_backends  # every Redis test here runs on one node and on a cluster


def test_online_equals_offline_latest_history_for_every_ml100k_user(redis_client, redis_namespace, tmp_path):
    dataset = load_dataset("ml-100k")
    vectors = np.random.default_rng(0).standard_normal((dataset.n_items, 8)).astype(np.float32)
    report = materialize(dataset, history_cap=15, item_vectors=vectors, client=redis_client,
                         namespace=redis_namespace, offline_root=tmp_path, progress=False)
    store = OnlineStore(redis_client, redis_namespace)
    assert store.active_version() == report.online.version
    assert store.version_info()["dataset_version"] == dataset.version

    # Offline side: a point-in-time lookup just after each user's newest event, read from Parquet.
    entity = dataset.interactions.group_by("user_id").agg((pl.col("timestamp").max() + 1).alias("timestamp"))
    offline = get_historical_features(entity, dataset, history_cap=15, root=tmp_path)
    assert offline.height == 943
    for user_id, items, stamps, count in offline.select("user_id", HIST_ITEMS, HIST_TIMESTAMPS,
                                                        HIST_COUNT).iter_rows():
        assert store.get_user_history(user_id) == list(zip(items, stamps)), f"user {user_id}"
        assert store.get_user_event_count(user_id) == count

    item_table = pl.read_parquet(report.offline_tables[next(n for n in report.offline_tables if n.startswith("item"))])
    ids = item_table["item_id"].to_list()
    assert store.get_item_metadata(ids) == item_table.select(ITEM_METADATA_COLUMNS).to_dicts()
    np.testing.assert_array_equal(store.get_item_vectors(ids), item_table["vector"].to_numpy())
    np.testing.assert_array_equal(store.get_item_vectors(ids[:3]), vectors[:3])


def _publish_tiny(client, namespace: str, cap: int = 3) -> str:
    users = pl.DataFrame({"user_id": ["u1", "u 2"], HIST_ITEMS: [["b", "a"], ["item with space"]],
                          HIST_TIMESTAMPS: [[20, 10], [5]], HIST_COUNT: [2, 1]})
    items = pl.DataFrame({c: [] for c in ITEM_METADATA_COLUMNS})
    return publish_version(client, namespace, users=users, items=items, meta={"history_cap": cap},
                           progress=False).version


def test_append_keeps_the_cap_newest_first_and_counts_every_event(redis_client, redis_namespace):
    _publish_tiny(redis_client, redis_namespace, cap=3)
    store = OnlineStore(redis_client, redis_namespace)
    assert store.get_user_history("u 2") == [("item with space", 5)]
    store.append_user_events("u1", [("d", 40), ("c", 30)])  # given out of order within the batch
    assert store.get_user_history("u1") == [("d", 40), ("c", 30), ("b", 20)]
    store.append_user_events("u1", [("e", 40)])  # same second as the newest: allowed, becomes newest
    assert store.get_user_history("u1") == [("e", 40), ("d", 40), ("c", 30)]
    assert store.get_user_history("u1", 2) == [("e", 40), ("d", 40)]
    assert store.get_user_history("u1", 0) == []
    assert store.get_user_event_count("u1") == 5
    store.append_user_events("new-user", [("a", 1)])
    assert store.get_user_history("new-user") == [("a", 1)] and store.get_user_event_count("new-user") == 1


def test_append_refuses_events_older_than_the_stored_newest(redis_client, redis_namespace):
    _publish_tiny(redis_client, redis_namespace)
    store = OnlineStore(redis_client, redis_namespace)
    with pytest.raises(OutOfOrderEventError, match="older than the newest stored event at 20"):
        store.append_user_events("u1", [("z", 19)])
    assert store.get_user_history("u1") == [("b", 20), ("a", 10)]
    with pytest.raises(ValueError, match="n must be >= 0"):
        store.get_user_history("u1", -1)


def test_reads_before_any_materialisation_say_what_to_run(redis_client, redis_namespace):
    store = OnlineStore(redis_client, redis_namespace)
    assert store.active_version() is None
    for call in (lambda: store.get_user_history("1"), lambda: store.append_user_events("1", [("a", 1)]),
                 lambda: store.get_item_metadata(["1"])):
        with pytest.raises(NoActiveVersionError, match="recsys features materialize"):
            call()


def test_unknown_items_and_missing_vectors_raise_key_errors_naming_them(redis_client, redis_namespace):
    _publish_tiny(redis_client, redis_namespace)
    store = OnlineStore(redis_client, redis_namespace)
    with pytest.raises(KeyError, match="no item vectors"):
        store.get_item_vectors(["a"])
    with pytest.raises(KeyError, match="nope"):
        store.get_item_metadata(["nope"])
    with pytest.raises(ValueError, match="namespace"):
        OnlineStore(redis_client, "has space")


def test_new_users_histories_expire_while_materialised_users_keep_theirs(redis_client, redis_namespace):
    version = _publish_tiny(redis_client, redis_namespace, cap=3)
    store = OnlineStore(redis_client, redis_namespace, new_user_ttl_s=3600)
    keys = store.keys
    for i in range(5):  # made-up ids, one event each: every one gets the TTL, renewed by later events
        store.append_user_events(f"drive-by-{i}", [("a", 100 + i)])
    for i in range(5):
        assert 0 < redis_client.ttl(keys.history(version, f"drive-by-{i}")) <= 3600
        assert 0 < redis_client.ttl(keys.event_count(version, f"drive-by-{i}")) <= 3600
    store.append_user_events("u1", [("c", 30)])  # a materialised user: kept until the next materialisation
    assert redis_client.ttl(keys.history(version, "u1")) == -1
    assert store.get_user_event_count("u1") == 3

    short = OnlineStore(redis_client, redis_namespace, new_user_ttl_s=1)
    short.append_user_events("passer-by", [("a", 1), ("b", 2)])
    assert short.get_user_event_count("passer-by") == 2
    deadline = time.monotonic() + 60
    while redis_client.exists(keys.history(version, "passer-by")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert short.get_user_history("passer-by") == [] and short.get_user_event_count("passer-by") == 0
    assert store.get_user_history("u1") == [("c", 30), ("b", 20), ("a", 10)]


def test_the_new_user_ttl_is_configurable_and_must_be_positive(redis_client, redis_namespace, monkeypatch):
    from recsys.config import get_settings

    monkeypatch.setenv("RECSYS_ONLINE_NEW_USER_TTL_S", "1234")
    get_settings.cache_clear()
    try:
        assert OnlineStore(redis_client, redis_namespace).new_user_ttl_s == 1234
    finally:
        get_settings.cache_clear()
    with pytest.raises(ValueError, match="new_user_ttl_s"):
        OnlineStore(redis_client, redis_namespace, new_user_ttl_s=-5)

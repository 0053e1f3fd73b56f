"""Point-in-time user history never leaks the future, on real MovieLens-100K and on hand-made ties."""
from __future__ import annotations

import random

import polars as pl
import pytest

from feature_store.definitions import (HIST_COUNT, HIST_ITEMS, HIST_TIMESTAMPS, USER_HISTORY, FeatureInputs,
                                       feature_inputs)
from feature_store.materialize import compute_features, user_buckets, write_offline_streaming
from feature_store.offline import (MissingFeaturesError, OfflineStore, get_historical_features, point_in_time_join,
                                   scan_training_events)


def test_every_ml100k_event_sees_only_strictly_earlier_events(ml100k_features):
    dataset, frames, _ = ml100k_features
    cap = frames.inputs.history_cap
    events = frames.training_events.with_row_index("event")
    assert events.height == dataset.interactions.height == 100_000

    pairs = events.select("event", "timestamp", HIST_TIMESTAMPS).explode(HIST_TIMESTAMPS).drop_nulls(HIST_TIMESTAMPS)
    assert pairs.height > 0
    leaked = pairs.filter(pl.col(HIST_TIMESTAMPS) >= pl.col("timestamp"))
    assert leaked.height == 0, f"{leaked.height} history entries are not strictly earlier than their event"

    # The uncapped count is the number of the user's events with a smaller timestamp.
    earlier = dataset.interactions.select(
        (pl.col("timestamp").rank("min").over("user_id") - 1).cast(pl.Int64).alias("expected"))["expected"]
    assert events[HIST_COUNT].to_list() == earlier.to_list()
    lengths = events.select(pl.col(HIST_ITEMS).list.len(), pl.col(HIST_TIMESTAMPS).list.len(),
                            pl.min_horizontal(pl.col(HIST_COUNT), pl.lit(cap)).cast(pl.UInt32).alias("want"))
    assert (lengths[HIST_ITEMS] == lengths["want"]).all() and (lengths[HIST_TIMESTAMPS] == lengths["want"]).all()
    newest_first = events.select(
        (pl.col(HIST_TIMESTAMPS).list.eval(pl.element().diff().le(0) | pl.element().diff().is_null()).list.all()))
    assert newest_first.to_series().all()


def test_ml100k_history_equals_brute_force_for_sampled_users(ml100k_features):
    dataset, frames, _ = ml100k_features
    cap = frames.inputs.history_cap
    users = random.Random(7).sample(sorted(dataset.interactions["user_id"].unique().to_list()), 30)
    got = frames.training_events.filter(pl.col("user_id").is_in(users))
    source = dataset.interactions.filter(pl.col("user_id").is_in(users))
    by_user: dict[str, list[tuple[int, int, str]]] = {}
    for user, item, item_index, ts in source.select("user_id", "item_id", "item_index", "timestamp").iter_rows():
        by_user.setdefault(user, []).append((ts, item_index, item))
    for rows in by_user.values():
        rows.sort()
    checked = 0
    for user, ts, items, stamps, count in got.select("user_id", "timestamp", HIST_ITEMS, HIST_TIMESTAMPS,
                                                     HIST_COUNT).iter_rows():
        earlier = [row for row in by_user[user] if row[0] < ts]  # same timestamp is not earlier
        newest = earlier[::-1][:cap]
        assert items == [item for _, _, item in newest], f"user {user} at {ts}"
        assert stamps == [t for t, _, _ in newest]
        assert count == len(earlier)
        checked += 1
    assert checked == source.height > 1000


def _tiny_inputs(cap: int = 5) -> FeatureInputs:
    events = pl.DataFrame({
        "user_id": ["a", "a", "a", "a", "b"],
        "item_id": ["x", "y", "z", "w", "x"],
        "item_index": [0, 1, 2, 3, 0],
        "timestamp": [10, 20, 20, 30, 20],
    }, schema_overrides={"item_index": pl.Int32})
    items = pl.DataFrame({"item_id": ["x", "y", "z", "w"], "item_index": [0, 1, 2, 3]})
    return FeatureInputs(events.lazy(), items.lazy(), cap, {})


def test_events_sharing_a_timestamp_do_not_see_each_other():
    frames_history = USER_HISTORY.build(_tiny_inputs()).collect()
    events = _tiny_inputs().interactions
    got = point_in_time_join(events, frames_history)
    assert got[HIST_ITEMS].to_list() == [[], ["x"], ["x"], ["z", "y", "x"], []]
    assert got[HIST_TIMESTAMPS].to_list() == [[], [10], [10], [20, 20, 10], []]
    assert got[HIST_COUNT].to_list() == [0, 1, 1, 3, 0]


def test_history_is_capped_but_count_is_not():
    history = USER_HISTORY.build(_tiny_inputs(cap=2)).collect()
    latest_a = history.filter(pl.col("user_id") == "a").sort("timestamp")[-1]
    assert latest_a[HIST_ITEMS].to_list() == [["w", "z"]]
    assert latest_a[HIST_COUNT].to_list() == [4]


def test_historical_features_at_arbitrary_times_keep_rows_and_order(ml100k_features):
    dataset, frames, root = ml100k_features
    user = "196"
    stamps = sorted(dataset.interactions.filter(pl.col("user_id") == user)["timestamp"].unique().to_list())
    first, last = stamps[0], stamps[-1]
    entity = pl.DataFrame({
        "user_id": [user, user, user, user, "no-such-user"],
        "timestamp": [last + 1, first, first + 1, first - 5, last],
        "request": ["late", "at-first", "after-first", "before", "unknown"],
    })
    got = get_historical_features(entity, dataset, history_cap=frames.inputs.history_cap, root=root)
    assert got["request"].to_list() == entity["request"].to_list()
    by_request = {row["request"]: row for row in got.iter_rows(named=True)}
    assert by_request["before"][HIST_ITEMS] == [] and by_request["at-first"][HIST_COUNT] == 0
    n_first = dataset.interactions.filter((pl.col("user_id") == user) & (pl.col("timestamp") == first)).height
    assert by_request["after-first"][HIST_COUNT] == n_first
    assert set(by_request["after-first"][HIST_TIMESTAMPS]) == {first}
    latest = frames.latest_user_history().filter(pl.col("user_id") == user).row(0, named=True)
    assert by_request["late"][HIST_ITEMS] == latest[HIST_ITEMS]
    assert by_request["unknown"][HIST_ITEMS] == [] and by_request["unknown"][HIST_COUNT] == 0


def test_historical_features_reject_bad_entity_frames(ml100k_features):
    dataset, frames, root = ml100k_features
    cap = frames.inputs.history_cap
    with pytest.raises(ValueError, match="lacks column"):
        get_historical_features(pl.DataFrame({"user_id": ["1"]}), dataset, cap, root)
    with pytest.raises(TypeError, match="string ids"):
        get_historical_features(pl.DataFrame({"user_id": [1], "timestamp": [5]}), dataset, cap, root)
    with pytest.raises(TypeError, match="integer"):
        get_historical_features(pl.DataFrame({"user_id": ["1"], "timestamp": [5.5]}), dataset, cap, root)
    with pytest.raises(MissingFeaturesError, match="recsys features materialize --dataset ml-100k"):
        get_historical_features(pl.DataFrame({"user_id": ["1"], "timestamp": [5]}), dataset, cap + 1, root)


def test_offline_tables_are_named_by_dataset_version_and_definition(ml100k_features):
    dataset, frames, root = ml100k_features
    store = OfflineStore(dataset.name, dataset.version, root)
    names = sorted(p.name for p in store.folder.iterdir())
    cap = frames.inputs.history_cap
    assert names == sorted([f"user_history-v1-cap{cap}.parquet", f"training_events-user_history-v1-cap{cap}.parquet",
                            "item_features-v1-novec.parquet"])
    assert store.folder == root / "ml-100k" / dataset.version
    assert store.scan(USER_HISTORY.table_name(frames.inputs)).collect().equals(frames.user_history)
    assert scan_training_events(dataset, cap, root).collect().equals(frames.training_events)
    # Same definition, other parameters -> another table; nothing is overwritten.
    assert USER_HISTORY.table_name(feature_inputs(dataset, cap + 1)) != USER_HISTORY.table_name(frames.inputs)


def test_feature_inputs_reject_bad_parameters(ml100k_features):
    dataset, _, _ = ml100k_features
    import numpy as np  # noqa: PLC0415

    with pytest.raises(ValueError, match="history_cap"):
        feature_inputs(dataset, history_cap=0)
    with pytest.raises(ValueError, match="n_items=1682"):
        compute_features(feature_inputs(dataset, 5, np.zeros((3, 4), dtype=np.float32)))


def test_streamed_materialisation_writes_the_same_tables_as_the_in_memory_one(ml100k_features, tmp_path):
    """Above `stream_rows` interactions the job works in user buckets (bounded memory); readers must
    get the very same tables, row for row and in the same order, and the same latest histories."""
    dataset, frames, root = ml100k_features
    inputs = frames.inputs
    streamed = OfflineStore(dataset.name, dataset.version, tmp_path / "streamed")
    tables, latest, items = write_offline_streaming(inputs, streamed, bucket_rows=15_000)
    buckets = user_buckets(inputs.interactions, 15_000)
    assert len(buckets) >= 6 and all(a <= b for a, b in buckets)
    in_memory = OfflineStore(dataset.name, dataset.version, root)
    for name, path in tables.items():
        assert path.parent == streamed.folder and pl.read_parquet(path).equals(pl.read_parquet(in_memory.path(name))), name
    assert latest.equals(frames.latest_user_history()) and items.equals(frames.item_features)
    assert sorted(p.name for p in streamed.folder.iterdir()) == sorted(p.name for p in in_memory.folder.iterdir())
    entity = dataset.interactions.select("user_id", "timestamp").sample(500, seed=1)
    assert get_historical_features(entity, dataset, inputs.history_cap, tmp_path / "streamed").equals(
        get_historical_features(entity, dataset, inputs.history_cap, root))

"""A materialisation is all-or-nothing for serving: the pointer switches only after a full write."""
from __future__ import annotations

import polars as pl
import pytest
import redis
import redis.cluster

from feature_store import publish
from feature_store.definitions import HIST_COUNT, HIST_ITEMS, HIST_TIMESTAMPS, ITEM_METADATA_COLUMNS
from feature_store.online import OnlineKeys, OnlineStore
from feature_store.publish import MaterializationInProgressError, publish_version

pytestmark = pytest.mark.redis_backends  # every Redis test here runs on one node and on a cluster

N_USERS = 50


def _frames(tag: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Users whose single history item names the generation `tag`, so reads show which version served."""
    users = pl.DataFrame({
        "user_id": [f"u{i}" for i in range(N_USERS)],
        HIST_ITEMS: [[f"{tag}-{i}"] for i in range(N_USERS)],
        HIST_TIMESTAMPS: [[i] for i in range(N_USERS)],
        HIST_COUNT: [1] * N_USERS,
    })
    items = pl.DataFrame({"item_id": [f"{tag}-{i}" for i in range(N_USERS)], "item_index": list(range(N_USERS)),
                          "title": [tag] * N_USERS})
    items = items.with_columns(pl.lit(None, pl.String).alias(c) for c in ITEM_METADATA_COLUMNS if c not in items.columns)
    return users, items


def _publish(client: redis.Redis, namespace: str, tag: str) -> str:
    users, items = _frames(tag)
    return publish_version(client, namespace, users=users, items=items, meta={"history_cap": 5}, batch_size=10,
                           progress=False).version


def _keys_of(client: redis.Redis, namespace: str, version: str) -> list[bytes]:
    return list(client.scan_iter(match=OnlineKeys(namespace).prefix(version) + "*"))


def _fail_pipeline_after(monkeypatch: pytest.MonkeyPatch, successful_calls: int) -> None:
    """Make the real pipeline (single node or cluster) raise on its (successful_calls + 1)-th execute: a crash mid-write."""
    calls = {"n": 0}

    def failing(original):  # noqa: ANN001, ANN202
        def execute(self, *args, **kwargs):  # noqa: ANN001, ANN202
            calls["n"] += 1
            if calls["n"] == successful_calls + 1:  # once: the cleanup after it (a pipeline on a cluster) runs
                raise redis.ConnectionError("injected failure mid-materialisation")
            return original(self, *args, **kwargs)
        return execute

    for kind in (redis.client.Pipeline, redis.cluster.ClusterPipeline):
        monkeypatch.setattr(kind, "execute", failing(kind.execute))


def test_failure_halfway_leaves_the_old_version_serving(redis_client, redis_namespace, monkeypatch):
    store = OnlineStore(redis_client, redis_namespace)
    old = _publish(redis_client, redis_namespace, "old")
    with monkeypatch.context() as patch:
        _fail_pipeline_after(patch, successful_calls=3)  # items + 2 of 5 user batches written
        with pytest.raises(redis.ConnectionError, match="injected"):
            _publish(redis_client, redis_namespace, "new")
    assert store.active_version() == old
    assert all(store.get_user_history(f"u{i}") == [(f"old-{i}", i)] for i in range(N_USERS))
    assert store.get_item_metadata(["old-7"])[0]["title"] == "old"
    assert redis_client.zrange(OnlineKeys(redis_namespace).versions, 0, -1) == [old.encode()]  # debris removed

    new = _publish(redis_client, redis_namespace, "new")
    assert store.active_version() == new
    assert store.get_user_history("u3") == [("new-3", 3)]


def test_debris_of_a_killed_job_is_deleted_by_the_next_successful_one(redis_client, redis_namespace, monkeypatch):
    store = OnlineStore(redis_client, redis_namespace)
    old = _publish(redis_client, redis_namespace, "old")
    with monkeypatch.context() as patch:
        _fail_pipeline_after(patch, successful_calls=2)
        patch.setattr(publish, "_delete_quietly", lambda *args: None)  # the process died: no cleanup ran
        with pytest.raises(redis.ConnectionError):
            _publish(redis_client, redis_namespace, "dead")
    dead = f"{int(old) + 1:06d}"
    assert _keys_of(redis_client, redis_namespace, dead) and store.active_version() == old

    new = _publish(redis_client, redis_namespace, "new")
    assert store.active_version() == new
    assert _keys_of(redis_client, redis_namespace, dead) == []
    assert _keys_of(redis_client, redis_namespace, old), "the previous version stays for in-flight readers"


def test_switch_keeps_only_the_active_and_previous_versions(redis_client, redis_namespace):
    first, second, third = (_publish(redis_client, redis_namespace, tag) for tag in ("a", "b", "c"))
    assert OnlineStore(redis_client, redis_namespace).active_version() == third
    assert _keys_of(redis_client, redis_namespace, first) == []
    assert len(_keys_of(redis_client, redis_namespace, second)) == 2 * N_USERS + 2  # histories, counts; item metadata, meta
    versions = redis_client.zrange(OnlineKeys(redis_namespace).versions, 0, -1)
    assert versions == [second.encode(), third.encode()]


def test_a_second_job_is_refused_while_the_first_holds_the_lock(redis_client, redis_namespace):
    redis_client.set(OnlineKeys(redis_namespace).lock, "other-job", ex=60)
    with pytest.raises(MaterializationInProgressError, match="another materialisation"):
        _publish(redis_client, redis_namespace, "x")
    assert OnlineStore(redis_client, redis_namespace).active_version() is None

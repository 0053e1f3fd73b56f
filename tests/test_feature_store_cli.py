"""`recsys features materialize` then `recsys features show-user` work end to end on real ML-100K."""
from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from commands.main import app


@pytest.fixture
def redis_url(redis_client) -> str:
    kwargs = redis_client.connection_pool.connection_kwargs
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={kwargs['db']}"
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs['db']}"


def test_materialize_then_show_user(isolated_settings, redis_url, redis_namespace, tmp_path):
    runner = CliRunner()
    vectors = tmp_path / "vectors.npy"
    np.save(vectors, np.ones((1682, 4), dtype=np.float32))
    result = runner.invoke(app, ["features", "materialize", "--dataset", "ml-100k", "--history-cap", "5",
                                 "--item-vectors", str(vectors), "--redis-url", redis_url,
                                 "--namespace", redis_namespace], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "100000 interactions" in result.output and "online version 000001" in result.output
    assert (tmp_path / "store" / "offline" / "ml-100k").is_dir()

    shown = runner.invoke(app, ["features", "show-user", "196", "--n", "3", "--redis-url", redis_url,
                                "--namespace", redis_namespace], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    assert "39 events" in shown.output and "Operation Dumbo Drop" in shown.output  # user 196's newest rating


def test_bad_item_vectors_are_reported_in_one_line(isolated_settings, tmp_path):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.ones((10, 4), dtype=np.float32))
    result = CliRunner().invoke(app, ["features", "materialize", "--dataset", "ml-100k", "--offline-only",
                                      "--item-vectors", str(bad)], env={"COLUMNS": "200"})
    assert result.exit_code == 1
    assert "expected shape (n_items=1682, dim)" in result.output


def test_materialize_the_train_split_serves_what_training_read(isolated_settings, redis_url, redis_namespace,
                                                                redis_client):
    from feature_store.online import OnlineStore
    from feature_store.store import FeatureStore
    from recsys.data import load_dataset
    from recsys.data.splits import apply_split

    dataset = load_dataset("ml-100k")
    train = apply_split(dataset, "leave-last-out").split("train")
    assert train.height == 100_000 - 2 * 943  # one valid and one test event per user
    result = CliRunner().invoke(app, ["features", "materialize", "--dataset", "ml-100k", "--history-cap", "50",
                                      "--train-split", "leave-last-out", "--redis-url", redis_url,
                                      "--namespace", redis_namespace], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"{train.height} interactions" in result.output
    store = OnlineStore(redis_client, redis_namespace)
    assert store.version_info()["split"] == "train:leave-last-out"
    assert store.version_info()["dataset_version"] == dataset.version  # the dataset's, not the train slice's
    windows = FeatureStore(50).historical_windows(train)
    ids = dataset.item_ids
    for user_index, user_id in list(enumerate(dataset.user_ids))[::50]:
        assert [ids[i] for i in windows[user_index]] == [item for item, _ in store.get_user_history(user_id)[::-1]]

    bad = CliRunner().invoke(app, ["features", "materialize", "--dataset", "ml-100k", "--train-split", "random",
                                   "--offline-only"], env={"COLUMNS": "200"})
    assert bad.exit_code == 1 and "unknown split strategy 'random'" in bad.output

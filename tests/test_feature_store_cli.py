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

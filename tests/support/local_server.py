"""Start `recsys serve` as a real subprocess on a free loopback port (tests and benchmarks).

Tests and load figures must exercise what production runs: uvicorn with uvloop and httptools in
its own process, talking to a real Redis, not an in-process test client. This starts one, waits
for `/readyz`, and stops it (SIGTERM, so logs are drained) on exit.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_ready(process: subprocess.Popen, url: str, timeout_s: float, log: str = "not kept",
                     interval_s: float = 0.1) -> None:
    """Poll `url`/readyz until 200; RuntimeError if `process` exits first, TimeoutError at the deadline.

    `log` names where the server's output went (a path), or is its tail, for the error message."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} during start-up (log: {log})")
        try:
            if httpx.get(url + "/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(interval_s)
    raise TimeoutError(f"server did not become ready within {timeout_s}s (log: {log})")


class LocalServer:
    """Context manager running the API on 127.0.0.1:<free port>.

    Args:
        run_dir: model to serve (variant A).
        env: extra environment (REDIS_URL, RECSYS_REDIS_NAMESPACE, RECSYS_SERVE_* ...).
        args: extra CLI arguments (e.g. ``["--run-b", path, "--split-b", "0.3"]``).

    Example::

        with LocalServer(run_dir, env={"REDIS_URL": url}) as server:
            httpx.get(server.url + "/healthz")
    """

    def __init__(self, run_dir: Path, env: dict[str, str] | None = None, args: list[str] | None = None,
                 startup_timeout_s: float = 120.0, log_file: Path | None = None):
        self.run_dir, self.env, self.args = Path(run_dir), env or {}, args or []
        self.startup_timeout_s = startup_timeout_s
        self.log_file = log_file
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def __enter__(self) -> "LocalServer":
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        if "RECSYS_STORE_DIR" not in self.env:  # never the developer's store: archived event ids of earlier
            import tempfile                     # runs would make a test's fresh ids look like duplicates

            env["RECSYS_STORE_DIR"] = tempfile.mkdtemp(prefix="recsys-test-store-")
        cmd = [sys.executable, "-m", "commands.main", "serve", "--run", str(self.run_dir), "--port", str(self.port),
               "--host", "127.0.0.1", *self.args]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until_ready(self.process, self.url, self.startup_timeout_s, str(self.log_file or "not kept"))
        except TimeoutError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def is_cluster(client) -> bool:  # noqa: ANN001 - a redis.Redis or redis.cluster.RedisCluster
    from redis.cluster import RedisCluster  # noqa: PLC0415

    return isinstance(client, RedisCluster)


def redis_env(client) -> dict[str, str]:  # noqa: ANN001
    """REDIS_URL (and RECSYS_REDIS_CLUSTER) that make a server process use the same Redis as `client`."""
    return {"REDIS_URL": redis_url_of(client), "RECSYS_REDIS_CLUSTER": "true" if is_cluster(client) else "false"}


def redis_url_of(client) -> str:  # noqa: ANN001 - a redis.Redis or redis.cluster.RedisCluster
    """The URL a subprocess can use to reach the same server as `client` (TCP or unix socket; a
    cluster: one of its masters)."""
    if is_cluster(client):
        node = client.get_primaries()[0]
        return f"redis://{node.host}:{node.port}/0"
    kwargs = client.connection_pool.connection_kwargs
    db = kwargs.get("db", 0)
    if kwargs.get("path"):
        return f"unix://{kwargs['path']}?db={db}"
    return f"redis://{kwargs.get('host', '127.0.0.1')}:{kwargs.get('port', 6379)}/{db}"

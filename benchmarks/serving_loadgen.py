"""A lean HTTP/1.1 load generator on raw asyncio streams (keep-alive, loopback only).

Why not httpx: at 500 requests/s on this 2-core machine the httpx async client itself used a full
core and its pool queue collapsed under an open-loop schedule, so it measured itself, not the
server. This sends a GET per request on a fixed set of keep-alive connections and parses only the
status line and Content-Length (uvicorn always sends it for these routes).

Open loop (`open_loop`): request i is due at start + i / rate; a worker sends it when due or as
soon as a connection frees up, and latency counts from the due time (wrk2-style, so a stalled
server cannot hide its queueing: no coordinated omission).
"""
from __future__ import annotations

import asyncio
import random
import re
import time
from dataclasses import dataclass, field

import numpy as np

_LENGTH = re.compile(rb"content-length:\s*(\d+)", re.I)


@dataclass
class PhaseResult:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    started: float = 0.0
    finished: float = 0.0

    def summary(self) -> dict:
        ms = np.asarray(self.latencies) * 1000 if self.latencies else np.zeros(1)
        total = len(self.latencies) + self.errors
        return {"requests": total, "errors": self.errors,
                "rps": round(total / max(self.finished - self.started, 1e-9), 1),
                "p50_ms": round(float(np.percentile(ms, 50)), 2), "p90_ms": round(float(np.percentile(ms, 90)), 2),
                "p99_ms": round(float(np.percentile(ms, 99)), 2), "max_ms": round(float(ms.max()), 2)}


class Connection:
    """One keep-alive HTTP/1.1 connection to host:port."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        """Send one GET, read the whole response, return its status (0 on a broken connection)."""
        return await self.send(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())

    async def post(self, path: str, body: bytes, headers: str = "") -> int:
        """POST a JSON body (`headers`: extra header lines, each ending in CRLF); same return as `get`."""
        return await self.send(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
                               f"Content-Length: {len(body)}\r\n{headers}\r\n".encode() + body)

    async def send(self, request: bytes) -> int:
        """Write one raw request, read the whole response, return its status (0 on a broken connection)."""
        try:
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.writer.write(request)
            head = await self.reader.readuntil(b"\r\n\r\n")
            match = _LENGTH.search(head)
            if match:
                await self.reader.readexactly(int(match.group(1)))
            return int(head[9:12])
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            self.close()
            return 0

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def open_loop(host: str, port: int, paths: list[str], rate: float, connections: int = 64) -> PhaseResult:
    """Send paths[i] due at start + i / rate over `connections` keep-alive connections."""
    result = PhaseResult(started=time.perf_counter() + 0.1)
    next_index = 0

    async def worker(conn: Connection) -> None:
        nonlocal next_index
        while next_index < len(paths):
            i = next_index
            next_index += 1
            due = result.started + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            status = await conn.get(paths[i])
            if status == 200:
                result.latencies.append(time.perf_counter() - due)
            else:
                result.errors += 1
        conn.close()

    await asyncio.gather(*[worker(Connection(host, port)) for _ in range(connections)])
    result.finished = time.perf_counter()
    return result


async def closed_loop(host: str, port: int, paths: list[str], concurrency: int, duration: float) -> PhaseResult:
    """`concurrency` connections each sending back to back for `duration` seconds (the ceiling)."""
    result = PhaseResult(started=time.perf_counter())
    until = result.started + duration
    rng = random.Random(0)

    async def worker(conn: Connection) -> None:
        while time.perf_counter() < until:
            sent = time.perf_counter()
            status = await conn.get(rng.choice(paths))
            if status == 200:
                result.latencies.append(time.perf_counter() - sent)
            else:
                result.errors += 1
        conn.close()

    await asyncio.gather(*[worker(Connection(host, port)) for _ in range(concurrency)])
    result.finished = time.perf_counter()
    return result

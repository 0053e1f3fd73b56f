"""TurnPipeline against real Redis servers: one write per loop turn on the pipeline's own
connections, each caller's own reply or error reply, and what happens when the connection breaks
(a restarted Redis) or the server stops answering (the deadline), so a cache lookup never hangs
and never reads another batch's reply."""
from __future__ import annotations

import asyncio
import socket
import threading

import pytest
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from serving.redis_batch import TurnPipeline
from serving.redis_link import RedisLink
from support.local_server import redis_url_of
from support.redis_process import RedisProcess, redis_server_binary


async def _pipeline(url: str, timeout_s: float = 5.0) -> tuple[RedisLink, TurnPipeline]:
    link = RedisLink.connect(url, timeout_s=timeout_s, cluster=False)
    await link.start()
    return link, TurnPipeline(link)


def test_a_turns_commands_go_in_one_write_and_each_caller_gets_its_own_reply(redis_server, redis_namespace):
    key = f"{redis_namespace}:k"

    async def scenario():
        link, pipe = await _pipeline(redis_url_of(redis_server))
        try:
            replies = await asyncio.gather(
                pipe.call("SET", key, b"v1", "EX", 60),
                pipe.call("GET", key),  # queued after the SET in the same turn: sees its value
                pipe.call("EVALSHA", "0" * 40, 0),  # an unknown script: this caller's error only
                pipe.call("INCR", key),  # a value that is not an integer: this caller's error only
                pipe.call("EVAL", "return {KEYS[1], ARGV[1]}", 1, key, "x"),
                return_exceptions=True)
            connections = len(pipe._idle)
            again = await pipe.call("GET", key)  # the connection is reused: nothing left unread on it
        finally:
            await pipe.close()
            await link.close()
        return replies, connections, again

    replies, connections, again = asyncio.run(scenario())
    assert replies[0] == b"OK" and replies[1] == b"v1"
    assert isinstance(replies[2], NoScriptError)
    assert isinstance(replies[3], ResponseError) and "not an integer" in str(replies[3])
    assert replies[4] == [key.encode(), b"x"]
    assert connections == 1  # the five commands were one write on one connection
    assert again == b"v1"


@pytest.mark.skipif(redis_server_binary() is None, reason="no redis-server binary on this machine")
def test_a_restarted_redis_is_answered_on_a_fresh_connection(tmp_path):
    async def scenario(redis: RedisProcess):
        link, pipe = await _pipeline(redis.url)
        try:
            assert await pipe.call("SET", "k", b"before") == b"OK"
            assert len(pipe._idle) == 1
            await asyncio.to_thread(redis.restart)  # persisted: same data, the idle connection is dead
            return await pipe.call("GET", "k")
        finally:
            await pipe.close()
            await link.close()

    with RedisProcess(tmp_path / "redis", persist=True) as redis:
        assert asyncio.run(scenario(redis)) == b"before"


def test_a_server_that_never_answers_fails_the_batch_at_the_deadline():
    """A socket that accepts but never replies (a hung Redis; here already the connection's handshake
    waits): every caller of the batch gets a Redis TimeoutError at the link's timeout, and the
    connection is not kept."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            held.append(conn)  # read nothing, answer nothing

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    port = listener.getsockname()[1]

    async def scenario():
        link, pipe = await _pipeline(f"redis://127.0.0.1:{port}/0", timeout_s=0.5)
        try:
            results = await asyncio.gather(pipe.call("GET", "a"), pipe.call("GET", "b"), return_exceptions=True)
            return results, len(pipe._idle)
        finally:
            await pipe.close()
            await link.close()

    try:
        results, idle = asyncio.run(scenario())
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()
    assert all(isinstance(r, RedisTimeoutError) for r in results), results
    assert idle == 0


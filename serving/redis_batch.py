"""Redis commands of concurrent requests, sent as one pipeline per event-loop turn, on the
pipeline's own connections.

Why: with redis-py's asyncio client a lone command costs ~90-100 µs of this process's CPU
(measured on the 2-core box: `client.get` 86 µs, `client.set` 98 µs), most of it the blocking
pool's bookkeeping (a condition, a timeout context, connection health checks, observability
hooks) and the retry wrapper around each call; the same command on a connection held by the
caller costs ~50 µs, and the kernel's loopback round trip ~35 µs of that. A feed miss issues two
commands (the cache lookup script and the cache write) and a hit one, so at 500 misses/s they
were a fifth of the server's CPU.

So: requests that issue a command in the same loop turn (their previous awaits completed in the
same poll) queue it here; one callback at the start of the next turn writes them all at once on
an idle connection of this pipeline (redis-py's own `Connection`: its handshake, parser and
encoding; made with the client pool's settings) and reads the replies in order, under one
deadline. Each caller gets its own reply, or its own error reply (`ResponseError`, e.g.
`NoScriptError`); a connection error or the deadline fails the whole batch and drops the
connection (its late replies must never be read as another batch's), and a batch that failed on
a connection reused from before is retried once on a fresh one, as the client's retry policy
does (a restarted Redis leaves every idle connection dead). Nothing waits for a timer.

Replies are raw (no response callbacks): `SET` answers b"OK", `EVALSHA` what the script returns.

Only for a single Redis node: a cluster client routes by slot, so the cluster path keeps one
command per call through the client (`TurnPipeline.enabled`).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from serving.redis_link import RedisLink
from serving.turns import TurnQueue

log = logging.getLogger(__name__)

Command = tuple[Any, ...]  # raw arguments: ("SET", key, value, "EX", 300)


class TurnPipeline:
    """`await batch.call("SET", key, value, "EX", 60)`: the command's raw reply, sent with the turn's others.

    Args:
        link: the server's Redis clients (their pool's settings make this pipeline's connections).
        max_batch: most commands in one write.
        max_idle: idle connections kept (a burst needs one per batch in flight; the rest are closed).

    Raises what the command itself would raise: a reply error only for its own command; a
    connection error or `TimeoutError` for every command of its batch.
    """

    def __init__(self, link: RedisLink, max_batch: int = 64, max_idle: int = 8):
        self.link, self.max_batch, self.max_idle = link, max_batch, max_idle
        self.enabled = not link.cluster
        self._turn: TurnQueue[Command] = TurnQueue(self._flush)
        self._tasks: set[asyncio.Task] = set()
        self._idle: list[Any] = []  # redis.asyncio.Connection, connected and with nothing unread
        self._timeout_s = link.aio.connection_pool.connection_kwargs.get("socket_timeout") or 1.0 if self.enabled else None

    async def call(self, *command: Any) -> Any:
        if not self.enabled:
            return await self.link.aio.execute_command(*command)
        return await self._turn.submit(command)

    def _flush(self, queued: list[tuple[Command, asyncio.Future]]) -> None:
        for start in range(0, len(queued), self.max_batch):
            task = asyncio.ensure_future(self._send(queued[start:start + self.max_batch]))
            self._tasks.add(task)  # a reference until done: the loop holds tasks only weakly
            task.add_done_callback(self._tasks.discard)

    async def _send(self, calls: list[tuple[Command, asyncio.Future]]) -> None:
        live = [c for c in calls if not c[1].done()]
        if not live:
            return
        reused = bool(self._idle)
        try:
            try:
                replies = await self._round_trip([command for command, _ in live])
            except (RedisConnectionError, OSError):
                if not reused:
                    raise
                replies = await self._round_trip([command for command, _ in live])  # once, on a fresh connection
        except asyncio.CancelledError:  # the loop is shutting down: so are the callers
            for _, future in live:
                future.cancel()
            raise
        except Exception as err:  # noqa: BLE001 - the connection failed: every caller gets the error
            for _, future in live:
                if not future.done():
                    future.set_exception(err)
            return
        for (_, future), reply in zip(live, replies):
            if future.done():
                continue
            if isinstance(reply, ResponseError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _round_trip(self, commands: list[Command]) -> list[Any]:
        """Write the commands on one connection and read their replies (error replies as values)."""
        connection = self._idle.pop() if self._idle else self._new_connection()
        timeout = self._timeout_s
        try:
            async with asyncio.timeout(timeout):  # one deadline for the write and every reply
                if not connection.is_connected:
                    await connection.connect()
                await connection.send_packed_command(connection.pack_commands(commands), check_health=False)
                replies = []
                for _ in commands:
                    try:
                        replies.append(await connection.read_response())
                    except ResponseError as err:
                        replies.append(err)
        except BaseException as err:
            await connection.disconnect(nowait=True)  # its unread replies must never reach another batch
            if isinstance(err, TimeoutError) and not isinstance(err, RedisTimeoutError):
                raise RedisTimeoutError(f"Redis did not answer {len(commands)} command(s) within {timeout}s") from err
            raise
        if len(self._idle) < self.max_idle:
            self._idle.append(connection)
        else:
            await connection.disconnect()
        return replies

    def _new_connection(self) -> Any:
        """A connection with the client pool's settings (address, credentials, database, parser), but no
        socket timeout of its own: a per-read timeout (and redis-py wraps each write in a task to time
        it) is most of a command's cost; `_round_trip`'s single deadline replaces them."""
        pool = self.link.aio.connection_pool
        return pool.connection_class(**{**pool.connection_kwargs, "socket_timeout": None})

    async def close(self) -> None:
        """Close the idle connections (the server's shutdown)."""
        idle, self._idle = self._idle, []
        for connection in idle:
            await connection.disconnect()

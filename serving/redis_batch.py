"""Redis commands of concurrent requests, sent as one pipeline per event-loop turn.

Why: with redis-py's asyncio client a lone command costs ~100-170 µs of this process's CPU (pool,
retry wrapper, a write and a read per command, measured on the 2-core box), and in a pipeline of
8 about 40 µs each. A feed miss issues two (the cache lookup script and the cache write) and a
hit one, so at a few hundred requests per second they were about a tenth of the server's CPU.
Requests that issue a command in the same loop turn (their previous awaits completed in the same
poll) queue it here; one callback at the start of the next turn sends them all as one
non-transactional pipeline and hands each caller its own reply or error. A lone command is sent
on its own, as before. Nothing waits for a timer.

Only for a single Redis node: a cluster client's pipeline splits commands by slot anyway, so the
cluster path keeps one command per call (`TurnPipeline.enabled`).
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from serving.redis_link import RedisLink
from serving.turns import TurnQueue

log = logging.getLogger(__name__)


class TurnPipeline:
    """`await batch.call("set", key, value, ex=60)`: the command's reply, sent with the turn's others.

    Args:
        link: the server's Redis clients (`link.aio` sends the pipeline).
        max_batch: most commands in one pipeline.

    Raises what the command itself would raise (a reply error only for its own command; a
    connection error for every command of the pipeline).
    """

    def __init__(self, link: RedisLink, max_batch: int = 64):
        self.link, self.max_batch = link, max_batch
        self.enabled = not link.cluster
        self._turn: TurnQueue[tuple[str, tuple, dict]] = TurnQueue(self._flush)
        self._tasks: set[asyncio.Task] = set()

    async def call(self, command: str, *args: Any, **kwargs: Any) -> Any:
        if not self.enabled:
            return await getattr(self.link.aio, command)(*args, **kwargs)
        return await self._turn.submit((command, args, kwargs))

    def _flush(self, queued: list) -> None:
        pending = [(command, args, kwargs, future) for (command, args, kwargs), future in queued]
        for start in range(0, len(pending), self.max_batch):
            task = asyncio.ensure_future(self._send(pending[start:start + self.max_batch]))
            self._tasks.add(task)  # a reference until done: the loop holds tasks only weakly
            task.add_done_callback(self._tasks.discard)

    async def _send(self, calls: list[tuple[str, tuple, dict, asyncio.Future]]) -> None:
        live = [c for c in calls if not c[3].done()]
        if not live:
            return
        try:
            if len(live) == 1:
                command, args, kwargs, _ = live[0]
                replies = [await getattr(self.link.aio, command)(*args, **kwargs)]
            else:
                async with self.link.aio.pipeline(transaction=False) as pipe:
                    for command, args, kwargs, _ in live:
                        getattr(pipe, command)(*args, **kwargs)
                    replies = await pipe.execute(raise_on_error=False)
        except asyncio.CancelledError:  # the loop is shutting down: so are the callers
            for *_, future in live:
                future.cancel()
            raise
        except Exception as err:  # noqa: BLE001 - the connection failed: every caller gets the error
            for *_, future in live:
                if not future.done():
                    future.set_exception(err)
            return
        for (*_, future), reply in zip(live, replies):
            if future.done():
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

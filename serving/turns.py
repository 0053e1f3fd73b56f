"""Work queued during one event-loop turn, handed over together at the start of the next.

Why: under load many requests become ready in the same turn (their awaits complete in one poll);
work they queue here (a user-tower encode, a Redis command) is done once for all of them by one
callback scheduled with `call_soon`, so nothing waits for a timer: a lone item is handled one
turn later, and batches grow exactly when the server is busy. `serving.batching` (tower calls)
and `serving.redis_batch` (Redis pipelines) share this mechanism.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")
Queued = list[tuple[Item, asyncio.Future]]


class TurnQueue(Generic[Item]):
    """`await queue.submit(item)`: the result `flush` sets on the item's future.

    Args:
        flush: called once per turn with every (item, future) queued in it, oldest first; it must
            settle each future (result or exception) or skip one already done (a cancelled caller).
    """

    def __init__(self, flush: Callable[[Queued], None]):
        self._flush_items = flush
        self._pending: Queued = []
        self._scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def submit(self, item: Item) -> Any:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests run several): nothing of the old one is flushed
            self._pending, self._scheduled, self._loop = [], False, loop
        future = loop.create_future()
        self._pending.append((item, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)  # after every callback already ready in this turn
        return await future

    def _flush(self) -> None:
        pending, self._pending, self._scheduled = self._pending, [], False
        self._flush_items(pending)

"""Micro-batching of the user tower: the feed misses that are ready together share one tower call.

Why: a request-sized tower call is almost all per-op dispatch (~150 traced ops for the 3-member
TikTok ensemble), so one call over 4 histories costs about what 1.3 single calls do
(`TowerUserEncoder.request_path`). Under load, many misses become ready in the same event-loop turn
(their cache lookups' Redis replies are read in one poll); each adds its history here and waits,
and one callback at the start of the next turn encodes them all. Nothing waits for a timer: a
lone miss is encoded one turn later, so at low load this costs nothing and at high load the
per-miss CPU falls exactly when it is short.

The batch is the same module's function of each history (rows are independent; its faster form is
checked against the module at load), so a batched user's vector equals the one it would get alone.
"""
from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from recsys.artifact import UserEncoder
from serving.metrics import TOWER_CALLS, TOWER_VECTORS
from serving.turns import TurnQueue

MAX_BATCH = 8  # the largest request batch (`recsys.models.user_encoder.REQUEST_BATCH`)


class UserVectorBatcher:
    """`await batcher.user_vector(encoder, history, timestamps)`: one row of a shared `encoder.encode` call.

    Example::

        batcher = UserVectorBatcher(); vector = await batcher.user_vector(retriever.encoder, [12, 7], [1.0, 2.0])
    """

    def __init__(self, max_batch: int = MAX_BATCH):
        self.max_batch = max_batch
        self._turn: TurnQueue[tuple[UserEncoder, list[int], list[float] | None]] = TurnQueue(self._flush)

    async def user_vector(self, encoder: UserEncoder, history: Sequence[int],
                          timestamps: Sequence[float] | None = None) -> np.ndarray:
        """The encoder's vector of one history (item indexes, oldest first)."""
        return await self._turn.submit((encoder, list(history), list(timestamps) if timestamps is not None else None))

    def _flush(self, queued: list) -> None:
        by_encoder: dict[int, tuple[UserEncoder, list]] = {}
        for (encoder, history, stamps), future in queued:
            by_encoder.setdefault(id(encoder), (encoder, []))[1].append((history, stamps, future))
        for encoder, requests in by_encoder.values():
            for start in range(0, len(requests), self.max_batch):
                self._encode(encoder, requests[start:start + self.max_batch])

    def _encode(self, encoder: UserEncoder, requests: list[tuple[list[int], list[float] | None, asyncio.Future]]) -> None:
        live = [r for r in requests if not r[2].done()]  # a cancelled request (client gone) is skipped
        if not live:
            return
        stamps = [r[1] for r in live]
        try:
            vectors = encoder.encode([r[0] for r in live], stamps if all(s is not None for s in stamps) else None)
        except Exception as err:  # noqa: BLE001 - raised to the request(s) whose history caused it
            if len(live) > 1:  # one bad history must not fail the others: each alone, as unbatched
                for request in live:
                    self._encode(encoder, [request])
                return
            if not live[0][2].done():
                live[0][2].set_exception(err)
            return
        TOWER_CALLS.inc()
        TOWER_VECTORS.inc(len(live))
        for row, (_, _, future) in enumerate(live):
            if not future.done():
                future.set_result(vectors[row])

"""Which model version each A/B variant serves, and switching it without dropping a request.

A switch loads the new run directory completely (files checked, index built, cold-start lists
made) in a worker thread while the old version keeps answering; only then is the variant's
reference replaced, which is a single atomic assignment. Requests hold the `Retriever` they
started with, so one in flight during the swap finishes on the version it began with. A broken
run directory raises `RunDirError` before anything is replaced.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable
from pathlib import Path

from serving.metrics import MODEL_SWITCHES, set_index_size
from serving.retriever import Retriever

log = logging.getLogger(__name__)


class LiveModels:
    """Variant name -> the `Retriever` serving it.

    Args:
        loader: run_dir -> Retriever (raises `RunDirError` for a bad directory).
    """

    def __init__(self, loader: Callable[[Path], Retriever]):
        self._loader = loader
        self._by_variant: dict[str, Retriever] = {}
        self._switch_lock = asyncio.Lock()

    def get(self, variant: str) -> Retriever:
        return self._by_variant[variant]

    @property
    def variants(self) -> list[str]:
        return sorted(self._by_variant)

    def load_now(self, variant: str, run_dir: Path) -> Retriever:
        """Blocking load at start-up (nothing is serving yet)."""
        retriever = self._loader(Path(run_dir))
        self._install(variant, retriever)
        return retriever

    async def switch(self, variant: str, run_dir: Path) -> tuple[Retriever, str | None, float]:
        """Load `run_dir` off the event loop, then swap it in; returns (new, previous version, seconds)."""
        async with self._switch_lock:  # one load at a time: two would double peak memory for nothing
            started = time.perf_counter()
            try:
                retriever = await asyncio.to_thread(self._loader, Path(run_dir))
            except Exception:
                MODEL_SWITCHES.labels("refused").inc()
                raise
            previous = self._by_variant.get(variant)
            self._install(variant, retriever)
            MODEL_SWITCHES.labels("switched").inc()
            seconds = time.perf_counter() - started
            log.info("variant %s: %s -> %s (%.2fs)", variant, previous.version if previous else None,
                     retriever.version, seconds)
            return retriever, previous.version if previous else None, seconds

    def _install(self, variant: str, retriever: Retriever) -> None:
        self._by_variant[variant] = retriever  # the atomic swap
        freeze_loaded_objects()
        set_index_size(variant, retriever.version, retriever.index.kind, retriever.n_items, retriever.run.dataset)


def freeze_loaded_objects() -> None:
    """Move everything alive now into the collector's permanent generation (`gc.freeze`, O(1)).

    Why: a loaded catalogue is millions of small tracked containers (item id strings in object
    arrays, per-item media lists); every full collection walked all of them, a 50-100 ms pause of
    the event loop at 1M items that showed up as the feed's p99. Frozen objects are still freed by
    reference counting when a version is replaced; only cycles among them would wait.
    """
    gc.freeze()


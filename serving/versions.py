"""Which model version each A/B variant serves, and switching it without dropping a request.

A switch loads the new run directory completely (files checked, index built, cold-start lists
made) in a worker thread while the old version keeps answering; only then is the variant's
reference replaced, which is a single atomic assignment. Requests hold the `Retriever` they
started with, so one in flight during the swap finishes on the version it began with. A broken
run directory raises `RunDirError` before anything is replaced.

The load runs outside any lock and under a deadline (`load_timeout_s`): a run directory on a hung
disk must not block the next switch, nor a request. One load at a time (a second switch while
one loads is refused with `SwitchInProgress`, which the route makes a 409); a load that missed
its deadline stops counting as "in progress" (its thread cannot be killed, and its result is
dropped).
"""
from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from recsys.artifact import RunDirError
from serving.metrics import MODEL_SWITCHES, set_index_size
from serving.retriever import Retriever

log = logging.getLogger(__name__)
T = TypeVar("T")


class SwitchInProgress(RuntimeError):
    """Another model switch is loading its run directory right now."""


class LiveModels:
    """Variant name -> the `Retriever` serving it.

    Args:
        loader: run_dir -> Retriever (raises `RunDirError` for a bad directory).
    """

    def __init__(self, loader: Callable[[Path], Retriever], load_timeout_s: float = 600.0):
        self._loader = loader
        self.load_timeout_s = load_timeout_s
        self._by_variant: dict[str, Retriever] = {}
        self._loading: Path | None = None
        self.shared = None  # serving.model_sync.SharedModels with --workers N: switches are announced to the others

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

    async def switch(self, variant: str, run_dir: Path, announce: bool = True) -> tuple[Retriever, str | None, float]:
        """Load `run_dir` off the event loop, then swap it in; returns (new, previous version, seconds).
        With workers (`self.shared`), a switch is then announced to the other workers, which follow
        (`serving.model_sync`); `announce=False` is the followers' own switch.

        Raises:
            SwitchInProgress: another switch is loading (one at a time: two would double peak memory).
            RunDirError: a bad run directory, or one that did not load within `load_timeout_s`.
        """
        if self._loading is not None:
            MODEL_SWITCHES.labels("refused").inc()
            raise SwitchInProgress(f"another model switch is loading {self._loading.name!r}; retry when it is done")
        self._loading = Path(run_dir)
        started = time.perf_counter()
        try:
            retriever = await asyncio.wait_for(in_daemon_thread(self._loader, Path(run_dir)), self.load_timeout_s)
        except asyncio.TimeoutError:
            MODEL_SWITCHES.labels("refused").inc()
            raise RunDirError(f"{run_dir}: did not load within {self.load_timeout_s:g}s (a slow or hung file?); "
                              "RECSYS_SERVE_MODEL_LOAD_TIMEOUT_S sets the limit") from None
        except Exception:
            MODEL_SWITCHES.labels("refused").inc()
            raise
        finally:
            self._loading = None
        previous = self._by_variant.get(variant)
        self._install(variant, retriever)  # no await between the load and the swap: atomic on the event loop
        MODEL_SWITCHES.labels("switched").inc()
        if announce and self.shared is not None:
            try:
                self.shared.announce(variant, Path(run_dir))
            except OSError as err:  # this worker switched; the others keep the old version until the next switch
                log.warning("variant %s: switched here, but could not tell the other workers (%s)", variant, err)
        seconds = time.perf_counter() - started
        log.info("variant %s: %s -> %s (%.2fs)", variant, previous.version if previous else None,
                 retriever.version, seconds)
        return retriever, previous.version if previous else None, seconds

    def _install(self, variant: str, retriever: Retriever) -> None:
        self._by_variant[variant] = retriever  # the atomic swap
        freeze_loaded_objects()
        set_index_size(variant, retriever.version, retriever.index.kind, retriever.n_items, retriever.run.dataset)


def in_daemon_thread(fn: Callable[..., T], *args: object) -> asyncio.Future[T]:
    """`fn(*args)` in a new daemon thread, as a future of the running loop.

    Not the loop's default executor: a load stuck on a hung file would keep its worker forever,
    and the executor's shutdown (at server exit) waits for every worker, so the server could not stop.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():  # timed out and cancelled meanwhile: nobody wants the result
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine
            result, error = None, exc
        try:
            loop.call_soon_threadsafe(settle, result, error)
        except RuntimeError:  # the loop closed while this load hung
            pass

    threading.Thread(target=work, name="model-load", daemon=True).start()
    return future


def freeze_loaded_objects() -> None:
    """Move everything alive now into the collector's permanent generation (`gc.freeze`, O(1)).

    Why: a loaded catalogue is millions of small tracked containers (item id strings in object
    arrays, per-item media lists); every full collection walked all of them, a 50-100 ms pause of
    the event loop at 1M items that showed up as the feed's p99. Frozen objects are still freed by
    reference counting when a version is replaced; only cycles among them would wait.
    """
    gc.freeze()


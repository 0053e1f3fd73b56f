"""One logging set-up for every entry point (CLI, torchrun workers, benchmarks).

Why a module: fbgemm-gpu announces each of its ~15 shared libraries on import with an INFO line on
the root logger ("Successfully loaded: 'fbgemm_gpu_py.so'"), which buried the training job's own
progress lines. They are dropped here, once, instead of raising the level of every logger.
"""
from __future__ import annotations

import logging

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _DropLibraryChatter(logging.Filter):
    """Drop INFO records of native-library loading (fbgemm-gpu); keep warnings and errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        message = record.getMessage()
        return not (message.startswith("Successfully loaded") and ".so" in message)


def configure_logging(verbose: bool = False) -> None:
    """INFO (DEBUG with `verbose`) to stderr in one format, library chatter filtered."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT)
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _DropLibraryChatter) for f in handler.filters):
            handler.addFilter(_DropLibraryChatter())

"""The FastAPI application: routes, error handlers, metrics middleware and the state's lifecycle."""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline  # /docs and /redoc from local files: they work offline

from recsys.config import Settings, get_settings
from serving.api.routes import admin, events, explorer, feed, health, items, search
from serving.config import ServingSettings
from serving.errors import install_error_handlers
from serving.hosts import HostCheckMiddleware
from serving.limits import BodyLimitMiddleware
from serving.metrics import LatencyMiddleware
from serving.state import build_state, load_models
from serving.versions import freeze_loaded_objects

log = logging.getLogger(__name__)


def create_app(settings: ServingSettings | None = None, shared: Settings | None = None, *,
               preload: bool = False) -> FastAPI:
    """Build the app; Redis connects when it starts (lifespan), not on import.

    Args:
        preload: load the model(s) now, so a broken run directory fails here with `RunDirError`
            (`recsys serve` turns it into a one-line error) instead of inside the server's start-up.

    Raises:
        ServingConfigError: settings no server should start with (see `ServingSettings.check_auth`).

    Example::

        uvicorn.run(create_app(ServingSettings(run_dir="runs/tiktok")), port=8000)
    """
    settings = settings or ServingSettings()
    shared = shared or get_settings()
    warning = settings.check_auth()
    models = load_models(settings) if preload else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import faiss
        import torch

        if warning:
            log.warning(warning)
        state = build_state(settings, shared, models)
        if state.link is not None:
            await state.link.start()  # a cluster client learns the slot map before the first burst
        faiss.omp_set_num_threads(1)  # one query per request: OpenMP threads only add contention
        torch.set_num_threads(1)  # same for the user tower: 1 ms per encode on one thread, ~50 ms on two under load
        app.state.serving = state
        freeze_loaded_objects()  # what start-up built lives as long as the process: keep it out of GC passes
        try:
            yield
        finally:
            await state.close()

    app = FastAPIOffline(title="recsys feed API", version="1.0", lifespan=lifespan,
                  description="Multimodal recommendations: personalised feed, similar items, content search, events.")
    install_error_handlers(app)
    for module in (feed, items, search, events, admin, health, explorer):
        app.include_router(module.router)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes,
                       max_upload_bytes=settings.max_upload_bytes)
    app.add_middleware(HostCheckMiddleware, allowed_hosts=settings.host_allow_list)  # before anything is read
    app.add_middleware(LatencyMiddleware)  # added last: outermost, so 413s are timed too
    return app

"""The FastAPI application: routes, error handlers, metrics middleware and the state's lifecycle."""
from __future__ import annotations

import asyncio
import logging
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI
from threadpoolctl import threadpool_limits
from fastapi_offline import FastAPIOffline  # /docs and /redoc from local files: they work offline

from recsys.config import Settings, get_settings
from serving.api.fast_feed import FeedFastPath
from serving.api.routes import admin, events, explorer, feed, health, items, search
from serving.catalogue_sync import sync as sync_catalogue
from serving.config import ServingSettings
from serving.errors import install_error_handlers
from serving.hosts import HostCheckMiddleware
from serving.limits import BodyLimitMiddleware
from serving.metrics import LatencyMiddleware, worker_exited
from serving.model_sync import follow_models
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
        # ... and BLAS (numpy's exact scans): OpenBLAS's 2 spinning threads made a 10k x 64 product
        # 7.5 ms wall / 1.45 ms CPU at load average 15, against 0.30 / 0.04 ms on one thread
        threadpool_limits(1, user_api="blas")
        torch.set_num_threads(1)  # same for the user tower: 1 ms per encode on one thread, ~50 ms on two under load
        app.state.serving = state
        followers = [asyncio.create_task(follow_catalogue(state.models, settings.catalogue_poll_ms / 1000.0))]
        if state.models.shared is not None:  # --workers N: follow model switches made through another worker
            followers.append(asyncio.create_task(follow_models(state.models, state.models.shared,
                                                               settings.catalogue_poll_ms / 1000.0)))
        freeze_loaded_objects()  # what start-up built lives as long as the process: keep it out of GC passes
        try:
            yield
        finally:
            for follower in followers:
                follower.cancel()
            await state.close()
            worker_exited(os.getpid())

    app = FastAPIOffline(title="recsys feed API", version="1.0", lifespan=lifespan,
                  description="Multimodal recommendations: personalised feed, similar items, content search, events.")
    install_error_handlers(app)
    for module in (feed, items, search, events, admin, health, explorer):
        app.include_router(module.router)
    if settings.fast_feed_route:  # innermost of ours: host check, timing and X-Served-By still apply
        app.add_middleware(FeedFastPath, api=app)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes,
                       max_upload_bytes=settings.max_upload_bytes)
    app.add_middleware(HostCheckMiddleware, allowed_hosts=settings.host_allow_list)  # before anything is read
    app.add_middleware(LatencyMiddleware)  # added last: outermost, so 413s are timed too
    app.add_middleware(ServedByMiddleware)
    return app


async def follow_catalogue(models, every_s: float) -> None:  # noqa: ANN001 - serving.versions.LiveModels
    """Apply catalogue writes made by other processes (the other workers of `recsys serve --workers N`,
    `recsys items add`): every `every_s`, each served version catches up with the shared operations
    log (`serving.catalogue_sync.sync`: a stat when nothing changed), so an item PUT through one
    worker is served by all of them within about `every_s` of its acknowledgement."""
    while True:
        await asyncio.sleep(every_s)
        for variant in list(models.variants):
            try:
                await asyncio.to_thread(sync_catalogue, models.get(variant))
            except Exception as err:  # noqa: BLE001 - a bad line or a failed embed must not stop the follower
                log.warning("catalogue: could not follow the operations log for %s (%s: %s)", variant,
                            err.__class__.__name__, err)


class ServedByMiddleware:
    """Adds ``X-Served-By: <pid>``: which worker process answered (``recsys serve --workers N``)."""

    def __init__(self, app):  # noqa: ANN001
        self.app = app
        self.header = (b"x-served-by", str(os.getpid()).encode())

    async def __call__(self, scope, receive, send):  # noqa: ANN001
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def sending(message):  # noqa: ANN001
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.header]
            await send(message)

        return await self.app(scope, receive, sending)


def worker_app() -> FastAPI:
    """The app of one `recsys serve --workers N` worker process: settings from the environment
    (`commands.serve` exports the command's flags as ``RECSYS_SERVE_*``)."""
    return create_app(ServingSettings(), preload=True)

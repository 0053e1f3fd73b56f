"""The FastAPI application: routes, error handlers, metrics middleware and the state's lifecycle."""
from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from recsys.config import Settings, get_settings
from serving.api.routes import admin, events, explorer, feed, health, items, search
from serving.config import ServingSettings
from serving.errors import install_error_handlers
from serving.metrics import LatencyMiddleware
from serving.state import build_state


def create_app(settings: ServingSettings | None = None, shared: Settings | None = None) -> FastAPI:
    """Build the app; models load and Redis connects when it starts (lifespan), not on import.

    Example::

        uvicorn.run(create_app(ServingSettings(run_dir="runs/tiktok")), port=8000)
    """
    settings = settings or ServingSettings()
    shared = shared or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        import faiss

        state = build_state(settings, shared)
        faiss.omp_set_num_threads(1)  # one query per request: OpenMP threads only add contention
        app.state.serving = state
        try:
            yield
        finally:
            await state.close()

    app = FastAPI(title="recsys feed API", version="1.0", lifespan=lifespan,
                  description="Multimodal recommendations: personalised feed, similar items, content search, events.")
    install_error_handlers(app)
    for module in (feed, items, search, events, admin, health, explorer):
        app.include_router(module.router)
    app.add_middleware(LatencyMiddleware)
    return app

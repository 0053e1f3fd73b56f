"""Everything the routes share, built once at start-up and closed at shutdown.

Routes get it with `Depends(get_state)` (see `serving.api.deps`), never from module globals, so a
test can start two apps in one process and each has its own models, cache and logs.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import partial

from feature_store.store import run_window
from recsys.config import Settings, get_settings
from serving.auth import KeyRing
from serving.cache import FeedCache
from serving.catalogue_explore import ExplorationPolicy
from serving.catalogue_write import CatalogueWriter
from serving.config import ServingSettings
from serving.event_archive import EventArchiver
from serving.event_stream import stream_key
from serving.events import EventIngest
from serving.experiment import Experiment
from serving.exposure_log import JsonlLog
from serving.feed import Feed
from serving.history import OnlineHistoryReader
from serving.index import IndexConfig
from serving.redis_link import RedisLink
from serving.retriever import Retriever
from serving.search import ContentSearch
from serving.versions import LiveModels

log = logging.getLogger(__name__)


@dataclass
class ServingState:
    settings: ServingSettings
    models: LiveModels
    experiment: Experiment
    link: RedisLink | None
    logs: JsonlLog
    feed: Feed
    events: EventIngest
    search: ContentSearch
    keys: KeyRing
    flusher: EventArchiver | None = None
    catalogue: CatalogueWriter | None = None

    async def close(self) -> None:
        self.logs.close()
        await self.feed.cache.close()
        if self.flusher is not None:
            self.flusher.close()
        if self.link is not None:
            await self.link.close()


def index_config(settings: ServingSettings) -> IndexConfig:
    return IndexConfig(kind=settings.index_kind, exact_max_items=settings.exact_max_items,
                       exact_max_scan=settings.exact_max_scan, hnsw_m=settings.hnsw_m,
                       hnsw_ef_construction=settings.hnsw_ef_construction, hnsw_ef_search=settings.hnsw_ef_search,
                       ivf_nlist=settings.ivf_nlist, ivf_max_nlist=settings.ivf_max_nlist, ivf_nprobe=settings.ivf_nprobe,
                       target_recall=settings.index_target_recall, build_threads=settings.build_threads,
                       memory_budget_bytes=None if settings.index_memory_budget_mb is None
                       else settings.index_memory_budget_mb * 2**20)


def load_models(settings: ServingSettings) -> LiveModels:
    """Load variant A (and B): raises `RunDirError` naming the bad file, before any port is opened."""
    if settings.run_dir is None:
        raise ValueError("no run directory: pass --run RUN_DIR or set RECSYS_SERVE_RUN_DIR")
    loader = partial(Retriever.load, index_config=index_config(settings), cold_start_pool=settings.cold_start_pool,
                     mmr_lambda=settings.mmr_lambda, max_k=settings.max_k,
                     index_store=settings.index_dir or get_settings().cache_dir / "index",
                     index_mmap=settings.workers > 1)  # mapping is for sharing; one process reads it (faster IVF)
    models = LiveModels(loader, settings.model_load_timeout_s)
    if settings.worker_dir is not None:  # --workers N: a switch through one worker reaches the others
        from serving.model_sync import SharedModels  # noqa: PLC0415

        models.shared = SharedModels(settings.worker_dir)
    models.load_now("A", settings.run_dir)
    if settings.run_dir_b is not None:
        models.load_now("B", settings.run_dir_b)
    return models


def build_state(settings: ServingSettings, shared: Settings, models: LiveModels | None = None) -> ServingState:
    """Load the model(s) unless given, connect Redis (degraded if it is down), open the logs, start the flusher."""
    models = models or load_models(settings)
    experiment = Experiment(settings.experiment_name, settings.experiment_salt, settings.variant_weights,
                            settings.experiment_mode)
    experiment.write_manifest(settings.log_dir)
    link = RedisLink.connect(shared.redis_url, settings.redis_timeout_s, settings.redis_retry_after_s,
                             cluster=shared.redis_cluster)
    namespace = shared.redis_namespace
    served = models.get(models.variants[0]).run.meta
    history = OnlineHistoryReader(link, namespace, run_window(served) or shared.online_history_cap, expect=served)
    cache = FeedCache(link if settings.cache_enabled else None, namespace, settings.cache_ttl_s, settings.lock_ttl_ms,
                      settings.lock_wait_ms)
    logs = JsonlLog(settings.log_dir, settings.log_flush_ms, settings.log_batch, settings.log_max_bytes,
                    settings.log_keep_parts)
    archive_root = shared.served_events_root()  # RECSYS_SERVE_EVENTS_DIR, read where training reads it too
    flusher = EventArchiver(link.dedicated, stream_key(namespace), archive_root,
                           flush_s=settings.events_flush_ms / 1000, batch=settings.events_flush_batch,
                           claim_idle_s=settings.events_claim_idle_s, timeout_s=max(settings.redis_timeout_s, 1.0))
    exploration = ExplorationPolicy(boost=-1.0 if settings.new_item_boost is None else settings.new_item_boost,
                                    share=settings.explore_share,
                                    temperature=settings.explore_temperature, window_s=settings.explore_window_s)
    for variant in models.variants:  # the new-item prior's vectors now, not on the first boosted miss
        retriever = models.get(variant)
        if exploration.boost_for(retriever.new_item_boost) > 0 and len(retriever.unseen):
            _ = retriever.unseen_vectors  # a cached property: gathered here once
    return ServingState(settings=settings, models=models, experiment=experiment, link=link, logs=logs,
                        feed=Feed(models, experiment, cache, history, logs, exploration),
                        catalogue=CatalogueWriter(models, link, namespace),
                        events=EventIngest(models, cache, history, link, logs, namespace, settings.event_id_ttl_s,
                                           settings.max_event_skew_s, archive_root),
                        search=ContentSearch(), keys=KeyRing(settings), flusher=flusher.start())

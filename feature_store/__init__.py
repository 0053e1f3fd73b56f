"""Feature store: one set of feature definitions feeding training (Parquet) and serving (Redis).

The way in is the `FeatureStore` façade (`feature_store.store`): historical windows for training
and evaluation, online reads for serving, and the check that a run and an online store agree on
dataset, data version and history window::

    from feature_store import FeatureStore
    fs = FeatureStore(window=50)
    fs.historical_windows(train_interactions)      # per user_index: the window, oldest first
    fs.online_window("196")                        # what serving reads now

Training reads point-in-time-correct features offline::

    from feature_store import get_historical_features
    rows = get_historical_features(entity_df, dataset, history_cap=50)   # user_id + timestamp

Serving reads the same features online::

    from feature_store import OnlineStore, connect_redis
    store = OnlineStore(connect_redis())
    store.get_user_history("196", 20)

Both are written by one job: `materialize(...)` / ``recsys features materialize --dataset NAME``.
"""
from __future__ import annotations

import importlib
from typing import Any

# Exports resolve on first use, so `import feature_store.embedding_cache` does not pay for
# polars and redis.
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("ITEM_FEATURES", "USER_HISTORY", "FeatureInputs", "FeatureView", "feature_inputs"),
                    "feature_store.definitions"),
    **dict.fromkeys(("FeatureFrames", "MaterializeReport", "compute_features", "materialize"),
                    "feature_store.materialize"),
    **dict.fromkeys(("MissingFeaturesError", "OfflineStore", "get_historical_features", "point_in_time_join",
                     "scan_training_events"), "feature_store.offline"),
    **dict.fromkeys(("NoActiveVersionError", "OnlineStore", "OutOfOrderEventError"), "feature_store.online"),
    **dict.fromkeys(("MaterializationInProgressError", "publish_version"), "feature_store.publish"),
    **dict.fromkeys(("RedisUnavailableError", "connect_redis"), "feature_store.redis_server"),
    **dict.fromkeys(("FeatureStore", "FeatureWindow", "compatibility_problems", "run_problems", "run_window"),
                    "feature_store.store"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'feature_store' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)

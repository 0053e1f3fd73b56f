"""The online-store mirror of the catalogue log (Redis), for readers other than the log's own.

The log itself (append-only operations + content-addressed media, read by serving's replay and by
training) lives in the offline store: `feature_store.catalogue_log`.
"""
from __future__ import annotations

import json
import logging
from typing import Any

log = logging.getLogger(__name__)


def online_key(namespace: str, dataset: str) -> str:
    """Redis hash of the live catalogue: item_id -> JSON {media, title, metadata, ts, seq}."""
    return f"{namespace}:catalogue:{dataset}:items"


async def mirror_online(link: Any, namespace: str, dataset: str, op: dict[str, Any]) -> bool:
    """Reflect one operation in the online store; False (logged) when Redis is unavailable — the
    log is the record, and the next write or a restart catches Redis up."""
    if link is None or not link.usable():
        return False
    key = online_key(namespace, dataset)
    try:
        if op["op"] == "put":
            summary = {k: op.get(k) for k in ("media", "title", "metadata", "ts", "seq")}
            await link.aio.hset(key, op["item_id"], json.dumps(summary))
        else:
            await link.aio.hdel(key, op["item_id"])
        link.ok()
        return True
    except Exception as err:  # noqa: BLE001  (redis errors of any kind: degrade, never fail the write)
        link.failed(err)
        log.warning("catalogue: online store not updated for %s (%s)", op["item_id"], err)
        return False

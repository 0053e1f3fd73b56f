"""The durable record of accepted events: a Redis Stream read by a consumer group.

An event is acknowledged to the client (HTTP 202) only once it is in the stream, and it leaves the
stream only after the flusher (`serving.event_archive`) has written it to the offline Parquet store.
Claiming the event id (`SET NX`, which makes retries harmless) and appending to the stream happen
in one Lua script, so they cannot come apart: if the server dies after the script, the id is
claimed *and* the event is recorded, and the client's retry, reported as a duplicate, is telling
the truth. A claimed id without a recorded event, which a retry would wrongly call a duplicate,
cannot exist.
"""
from __future__ import annotations

from typing import Any

from serving.redis_link import REDIS_ERRORS, RedisLink
from serving.responses import dumps

FIELD = b"e"  # each entry holds one event as JSON under this field
GROUP = "offline-parquet"

# KEYS: stream, id key 1..n; ARGV: id TTL s, event JSON 1..n -> per event: stream entry id, or false (seen)
_RECORD = """
local ttl = ARGV[1]
local out = {}
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ttl) then
    out[i - 1] = redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
  else
    out[i - 1] = false
  end
end
return out
"""


def stream_key(namespace: str) -> str:
    return f"{namespace}:serve:events:stream"


class EventStream:
    """Record events (claim id + append) and undo a recording whose online update failed.

    Args:
        link: the server's Redis clients.
        namespace: key prefix (`RECSYS_REDIS_NAMESPACE`).
        id_ttl_s: how long a claimed event id is remembered (retries within it are duplicates).
    """

    def __init__(self, link: RedisLink, namespace: str, id_ttl_s: int):
        self.link, self.id_ttl_s = link, id_ttl_s
        self.key = stream_key(namespace)
        self.id_prefix = f"{namespace}:serve:event:"
        self._record = link.aio.register_script(_RECORD)

    async def seen(self, event_ids: list[str]) -> list[bool]:
        """Whether each id was claimed before (read-only; `record` decides races)."""
        async with self.link.aio.pipeline(transaction=False) as pipe:
            for event_id in event_ids:
                pipe.exists(self.id_prefix + event_id)
            return [bool(n) for n in await pipe.execute()]

    async def record(self, events: list[dict[str, Any]]) -> list[bytes | None]:
        """Claim each event's id and append it to the stream, atomically; None where the id was taken."""
        if not events:
            return []
        keys = [self.key] + [self.id_prefix + e["event_id"] for e in events]
        result = await self._record(keys=keys, args=[self.id_ttl_s] + [dumps(e) for e in events])
        return [r if r else None for r in result]

    async def forget(self, event_ids: list[str], entry_ids: list[bytes]) -> None:
        """Best-effort undo of `record` (the online append failed, so the client is told to retry)."""
        if not event_ids:
            return
        try:
            async with self.link.aio.pipeline(transaction=True) as pipe:
                pipe.xdel(self.key, *entry_ids)
                pipe.delete(*[self.id_prefix + i for i in event_ids])
                await pipe.execute()
        except REDIS_ERRORS as err:  # the events stay recorded; a retry is then (truly) a duplicate
            self.link.failed(err)

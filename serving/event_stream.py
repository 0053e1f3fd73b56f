"""The durable record of accepted events: a Redis Stream read by a consumer group.

An event is acknowledged to the client (HTTP 202) only once it is in the stream, and it leaves the
stream only after the flusher (`serving.event_archive`) has written it to the offline Parquet store.
Claiming the event id (`SET NX`, which makes retries harmless) and appending to the stream happen
in one Lua script, so they cannot come apart: if the server dies after the script, the id is
claimed *and* the event is recorded, and the client's retry, reported as a duplicate, is telling
the truth. A claimed id without a recorded event, which a retry would wrongly call a duplicate,
cannot exist.

A claim stores the event's payload fingerprint (`fingerprint`: user, item, type and the client's
`ts`), so a reused id is told apart: the same payload is a retry (a duplicate, 202), another
payload is a conflict (the API's 409), never silently dropped. Claims written before
fingerprints existed, or re-seeded from the offline store after Redis lost them, hold `1`
("payload unknown") and count as retries.

A Redis without persistence forgets every claim when it restarts, and a client's retry of an
acknowledged event would be accepted twice. The claim set therefore carries a marker key set
once it is complete (stream, claims and marker share one hash tag: one Redis Cluster slot, so the
event path is as atomic on a cluster as on one node; the event stream is one key anyway); when `seen` finds the marker missing (a new or wiped Redis), the caller
re-claims the ids the offline store archived within the id TTL (`reclaim`) before deciding
anything, then sets the marker.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from serving.redis_link import REDIS_ERRORS, RedisLink
from serving.responses import dumps

FIELD = b"e"  # each entry holds one event as JSON under this field
GROUP = "offline-parquet"
UNKNOWN_PAYLOAD = b"1"  # a claim whose payload is not known: any reuse of the id counts as a retry
DUPLICATE, CONFLICT = 0, -1
Seen = Literal["new", "duplicate", "conflict"]

# KEYS: stream, id key 1..n; ARGV: id TTL s, (event JSON, fingerprint) 1..n
# -> per event: stream entry id; 0 (seen, same payload); -1 (seen, another payload)
_RECORD = """
local ttl = ARGV[1]
local out = {}
for i = 2, #KEYS do
  local fingerprint = ARGV[2 * i - 1]
  if redis.call('SET', KEYS[i], fingerprint, 'NX', 'EX', ttl) then
    out[i - 1] = redis.call('XADD', KEYS[1], '*', 'e', ARGV[2 * i - 2])
  else
    local held = redis.call('GET', KEYS[i])
    if held == fingerprint or held == '1' then out[i - 1] = 0 else out[i - 1] = -1 end
  end
end
return out
"""


def fingerprint(user_id: str, item_id: str, event_type: str, ts: float | None) -> bytes:
    """What makes two posts of one event id the same event (the client's fields, not receipt time)."""
    raw = json.dumps([user_id, item_id, event_type, None if ts is None else float(ts)], separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:32].encode()


def events_tag(namespace: str) -> str:
    """The hash tag shared by the stream and every event-id claim, so the record script (stream +
    claims) and `forget`'s transaction touch one slot of a Redis Cluster."""
    return f"{{{namespace}:serve:events}}"


def stream_key(namespace: str) -> str:
    return f"{events_tag(namespace)}:stream"


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
        self.id_prefix = f"{events_tag(namespace)}:id:"
        self.warm_key = f"{events_tag(namespace)}:claims-complete"
        self._record = link.aio.register_script(_RECORD)

    async def seen(self, claims: list[tuple[str, bytes]]) -> tuple[list[Seen], bool]:
        """For each (event id, fingerprint): new, a retry (duplicate) or a conflict (read-only; `record`
        decides races); and whether the claim set is complete (False: Redis lost it, see `reclaim`)."""
        async with self.link.aio.pipeline(transaction=False) as pipe:
            pipe.exists(self.warm_key)
            for event_id, _ in claims:
                pipe.get(self.id_prefix + event_id)
            warm, *held = await pipe.execute()
        return [_compare(h, fp) for h, (_, fp) in zip(held, claims)], bool(warm)

    async def reclaim(self, archived: list[tuple[str, float]], now: float) -> int:
        """Claim archived (event id, received_at) again for the rest of their TTL, then mark the set complete."""
        claimed = 0
        for start in range(0, len(archived), 1000):
            async with self.link.aio.pipeline(transaction=False) as pipe:
                for event_id, received_at in archived[start:start + 1000]:
                    left = int(self.id_ttl_s - (now - received_at))
                    if left > 0:
                        pipe.set(self.id_prefix + event_id, UNKNOWN_PAYLOAD, nx=True, ex=left)
                claimed += sum(1 for ok in await pipe.execute() if ok)
        await self.link.aio.set(self.warm_key, b"1")
        return claimed

    async def record(self, events: list[dict[str, Any]], fingerprints: list[bytes]) -> list[bytes | int]:
        """Claim each event's id and append it to the stream, atomically; per event the stream
        entry id, or `DUPLICATE` / `CONFLICT` where the id was taken (same / other payload)."""
        if not events:
            return []
        keys = [self.key] + [self.id_prefix + e["event_id"] for e in events]
        args: list[Any] = [self.id_ttl_s]
        for event, fp in zip(events, fingerprints):
            args += [dumps(event), fp]
        return list(await self._record(keys=keys, args=args))

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


def _compare(held: bytes | None, fp: bytes) -> Seen:
    if held is None:
        return "new"
    return "duplicate" if held in (fp, UNKNOWN_PAYLOAD) else "conflict"

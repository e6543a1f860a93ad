"""The outbox streams: one Redis Stream per shard, read through one consumer group.

An entry stays pending in the group until `done` acknowledges and deletes it, so an effect whose
performer died is found again by `pending_page` and claimed by another consumer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from service.store.keys import Keys
from service.store.store import as_text

GROUP = "dispatch"


@dataclass(frozen=True, slots=True)
class Entry:
    stream: str
    entry_id: str
    payload: bytes | None  # None: deleted after delivery, nothing left to perform


@dataclass(frozen=True, slots=True)
class Pending:
    entry_id: str
    deliveries: int
    idle_ms: int


class OutboxStreams:
    def __init__(self, client: Any, keys: Keys) -> None:
        self.redis = client
        self.streams = keys.all_outboxes()

    async def ensure_groups(self) -> None:
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read_new(self, consumer: str, batch: int, block_ms: int) -> list[Entry]:
        """Entries no consumer has read yet, from every shard (waiting up to `block_ms` for one)."""
        if isinstance(self.redis, RedisCluster):  # one slot per call on a cluster
            replies: list[Any] = []
            for stream in self.streams:
                replies += await self.redis.xreadgroup(GROUP, consumer, {stream: ">"}, count=batch)
            if not replies:  # no blocking read across slots: wait as a blocking read would
                await asyncio.sleep(block_ms / 1000)
        else:
            streams = dict.fromkeys(self.streams, ">")
            replies = await self.redis.xreadgroup(GROUP, consumer, streams, count=batch, block=block_ms)
        return [Entry(as_text(stream), as_text(entry_id), _payload(fields))
                for stream, entries in replies or [] for entry_id, fields in entries]

    async def pending_page(self, stream: str, after: str | None, count: int, min_idle_ms: int) -> list[Pending]:
        """Up to `count` pending entries idle at least `min_idle_ms`, after the id `after`."""
        start = "-" if after is None else "(" + after
        page = await self.redis.xpending_range(stream, GROUP, min=start, max="+", count=count,
                                               idle=min_idle_ms)
        return [Pending(as_text(item["message_id"]), int(item["times_delivered"]),
                        int(item["time_since_delivered"])) for item in page]

    async def claim(self, stream: str, consumer: str, min_idle_ms: int, entry_id: str) -> list[Entry]:
        """Take over a pending entry, unless another consumer claimed it within `min_idle_ms`."""
        claimed = await self.redis.xclaim(stream, GROUP, consumer, min_idle_ms, [entry_id])
        return [Entry(stream, as_text(found_id), _payload(fields)) for found_id, fields in claimed]

    async def done(self, stream: str, entry_id: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.xack(stream, GROUP, entry_id)
        pipe.xdel(stream, entry_id)
        await pipe.execute()

    async def pending_count(self) -> int:
        pipe = self.redis.pipeline(transaction=False)
        for stream in self.streams:
            pipe.xpending(stream, GROUP)
        total = 0
        for summary in await pipe.execute(raise_on_error=False):
            if isinstance(summary, dict):
                total += int(summary.get("pending", 0))
        return total


def _payload(fields: Any) -> bytes | None:
    if not fields:
        return None
    value = fields.get(b"e") or fields.get("e")
    return value.encode() if isinstance(value, str) else value

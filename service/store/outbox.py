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

# The owner of pending entries it is still performing resets their idle time (JUSTID: without
# counting a delivery), so that no other consumer claims them while it works. Only entries it
# still owns: one another consumer has taken over stays with that consumer.
EXTEND = """
local n = 0
for i = 3, #ARGV do
  local mine = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2])
  if #mine > 0 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
"""

# A consumer is deleted only with nothing pending: XGROUP DELCONSUMER drops its pending entries,
# which no other consumer could then claim. ARGV: group, consumer.
RETIRE = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


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
        self._extend = client.register_script(EXTEND)
        self._retire = client.register_script(RETIRE)

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

    async def extend(self, stream: str, consumer: str, entry_ids: list[str]) -> int:
        """Reset the idle time of the entries `consumer` still owns: it is performing them."""
        if not entry_ids:
            return 0
        return int(await self._extend(keys=[stream], args=[GROUP, consumer, *entry_ids]))

    async def retire(self, stream: str, consumer: str) -> bool:
        """Delete `consumer` from the stream's group unless it has entries pending."""
        return bool(await self._retire(keys=[stream], args=[GROUP, consumer]))

    async def idle_consumers(self, stream: str, idle_ms: int) -> list[str]:
        """The consumers idle at least `idle_ms` with nothing pending: dead dispatchers'."""
        found = await self.redis.xinfo_consumers(stream, GROUP)
        return [as_text(c["name"]) for c in found
                if int(c["pending"]) == 0 and int(c["idle"]) >= idle_ms]

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

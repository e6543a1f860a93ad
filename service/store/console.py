"""What the audit trail and the operator console read: a verification's events, a client's live
and outcome counters, and the verifications of a client's tx_id.

Counters are kept per shard (in the slot of the verifications they count, written by the same
commit), so a client's figure is the sum over the shards: one pipelined round trip (on a cluster,
one call per key, concurrently).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any

from redis.asyncio.cluster import RedisCluster

from service.store import audit
from service.store.plan import OUTCOME_BUCKET_MS
from service.store.store import Store, as_text

HOUR_MS = 3_600_000


class ConsoleReads:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.keys = store.keys

    async def events(self, verification_id: str) -> list[dict[str, Any]]:
        """The verification's audit trail, oldest first."""
        return audit.events_of(await self.store.redis.hgetall(self.keys.record(verification_id)))

    async def live(self, client_id: str) -> Counter[str]:
        """The client's live verifications by `channel|state`."""
        keys = [self.keys.live(shard, client_id) for shard in range(self.keys.shards)]
        return _sum(await self._many("hgetall", keys))

    async def outcomes(self, client_id: str, now_ms: int) -> tuple[int, Counter[str]]:
        """The client's outcomes by `channel|status|code` since the returned moment: the last hour,
        counted in whole buckets (so up to one bucket more)."""
        first, last = (now_ms - HOUR_MS) // OUTCOME_BUCKET_MS, now_ms // OUTCOME_BUCKET_MS
        keys = [self.keys.outcomes(shard, client_id, bucket)
                for shard in range(self.keys.shards) for bucket in range(first, last + 1)]
        return first * OUTCOME_BUCKET_MS, _sum(await self._many("hgetall", keys))

    async def by_tx_id(self, client_id: str, tx_id: str) -> list[str]:
        """The ids of the client's verifications with this tx_id while their records live: the live
        one (its tx claim) and the newest finished one of each shard."""
        claim = self.keys.tx_claim(self.keys.tx_shard(client_id, tx_id), client_id, tx_id)
        keys = [claim, *(self.keys.tx_lookup(shard, client_id, tx_id) for shard in range(self.keys.shards))]
        found = {as_text(held) for held in await self._many("get", keys) if held is not None}
        return sorted(v for v in found if self.keys.shard_of_id(v) is not None)

    async def _many(self, command: str, keys: Sequence[str]) -> list[Any]:
        client = self.store.redis
        if isinstance(client, RedisCluster):
            return list(await asyncio.gather(*(getattr(client, command)(key) for key in keys)))
        pipe = client.pipeline(transaction=False)
        for key in keys:
            getattr(pipe, command)(key)
        return list(await pipe.execute())


def _sum(hashes: Sequence[dict[Any, Any]]) -> Counter[str]:
    total: Counter[str] = Counter()
    for fields in hashes:
        for name, value in fields.items():
            count = int(value)
            if count > 0:
                total[as_text(name)] += count
    return total

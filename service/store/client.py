"""Connecting to the store: a Redis server, a Redis Cluster, or the embedded in-memory store.

With no VERIFLOW_REDIS_URL the service runs on an embedded in-memory Redis (fakeredis, with
Lua), so it works on a machine with no Redis installed; its state does not survive a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

Redis = aioredis.Redis | RedisCluster

# redis-py's default pool fails (MaxConnectionsError) past 100 connections in use, which an
# API under more concurrent requests would answer with 500s. A blocking pool waits instead, but
# its wait costs ~15 us CPU per command (bench/README.md); a higher cap costs nothing until used.
POOL_CONNECTIONS = 2000


@dataclass(frozen=True, slots=True)
class StoreInfo:
    description: str
    durable: bool


def connect(url: str | None) -> tuple[Any, StoreInfo]:
    """A client for `url`, or the embedded store when there is none."""
    if url is None:
        import fakeredis  # noqa: PLC0415 - only the embedded store needs it

        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        return client, StoreInfo("embedded in-memory store (no Redis configured)", durable=False)
    if url.startswith("redis+cluster://"):
        cluster = RedisCluster.from_url("redis://" + url.removeprefix("redis+cluster://"))
        return cluster, StoreInfo(f"Redis Cluster at {redact(url)}", durable=True)
    single = aioredis.Redis.from_url(url, max_connections=POOL_CONNECTIONS)
    return single, StoreInfo(f"Redis at {redact(url)}", durable=True)


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return scheme + sep + rest

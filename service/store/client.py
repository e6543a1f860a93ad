"""Connecting to the store: a Redis server, a Redis Cluster, or the embedded in-memory store.

With no VERIFLOW_REDIS_URL the service runs on an embedded in-memory Redis (fakeredis, with
Lua), so it works on a machine with no Redis installed; its state does not survive a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError, RedisError, TimeoutError  # noqa: A004 - redis' own

from service.store.lane import CommandLane, LaneAddress

Redis = aioredis.Redis | RedisCluster

# redis-py's default pool fails (MaxConnectionsError) past 100 connections in use, which an
# API under more concurrent requests would answer with 500s. A blocking pool waits instead, but
# its wait costs ~15 us CPU per command (bench/README.md); a higher cap costs nothing until used.
POOL_CONNECTIONS = 2000


@dataclass(frozen=True, slots=True)
class StoreInfo:
    description: str
    durable: bool


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """How long a command may wait for the store, and how it retries a broken connection.

    A frozen store is answered within about socket_timeout_s, a stopped one at once. One retry on a
    connection error is what a pooled connection the server closed (a restart) needs: the
    command is sent again on a new connection, instead of failing the request."""

    socket_timeout_s: float = 2.0
    connect_timeout_s: float = 1.0
    retries: int = 1
    # cluster: a few more, so that a MOVED slot or a refreshed topology is followed
    cluster_retries: int = 3

    def retry(self, retries: int, *, on_timeout: bool = False) -> Retry:
        """Retries on a broken connection; on a timeout only when asked (a cluster, whose client
        then refreshes its view of the slots): a frozen server is not asked twice."""
        errors: tuple[type[RedisError], ...] = (ConnectionError, TimeoutError) if on_timeout else (ConnectionError,)
        return Retry(self.backoff(), retries, supported_errors=errors)

    @staticmethod
    def backoff() -> ExponentialBackoff:
        return ExponentialBackoff(cap=0.5, base=0.05)


class _WritesWithoutWaiting:
    """A command the socket takes at once is written without redis-py's `wait_for` around the
    write, which costs a task and a timer per command (~7 % of an API process's CPU). Only when
    earlier bytes are still queued can a write wait, and then it goes through redis-py's own path,
    socket_timeout included; a broken connection still fails the read that follows, inside the
    same retry."""

    _writer: asyncio.StreamWriter | None
    health_check_interval: float

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        writer = self._writer
        if (writer is not None and isinstance(command, list) and not self.health_check_interval
                and writer.transport.get_write_buffer_size() == 0 and not writer.transport.is_closing()):
            writer.writelines(command)
            return
        await super().send_packed_command(command, check_health)  # type: ignore[misc]


class QuickConnection(_WritesWithoutWaiting, aioredis.Connection):
    """For `redis://` (redis-py picks its own classes for `rediss://` and `unix://` URLs)."""


class _ClosedMidCommand:
    """redis-py's cluster client, handling a command's failure in a failover, closes the node's
    connections, and with them one another command is about to write to or read from. That
    command then fails with AttributeError ("'NoneType' object has no attribute 'writelines'")
    where a closed connection means ConnectionError. Raised as one, it is retried by the
    cluster client and, should it still fail, answered 503 like any store fault, not 500."""

    is_connected: bool

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        with self._closed_is_a_connection_error("written"):
            await super().send_packed_command(command, check_health)  # type: ignore[misc]

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        with self._closed_is_a_connection_error("read"):
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]

    @contextlib.contextmanager
    def _closed_is_a_connection_error(self, doing: str) -> Iterator[None]:
        try:
            yield
        except AttributeError as exc:
            if self.is_connected:
                raise
            msg = f"the connection was closed while a command was {doing}"
            raise ConnectionError(msg) from exc


class ClusterConnection(_ClosedMidCommand, aioredis.Connection):
    """A Redis Cluster node's connections (`redis+cluster://`)."""


def _cluster_connections(cluster: RedisCluster) -> RedisCluster:
    """Makes `ClusterConnection` the class of every connection the cluster client opens: its
    constructor takes none, and its nodes are made from its connection settings (the startup
    nodes already were, and have opened nothing yet)."""
    cluster.connection_kwargs["connection_class"] = ClusterConnection  # shared with its nodes manager
    for node in cluster.nodes_manager.startup_nodes.values():
        node.connection_class = ClusterConnection
    return cluster


def connect(url: str | None, options: StoreOptions | None = None) -> tuple[Any, StoreInfo]:
    """A client for `url`, or the embedded store when there is none."""
    options = options or StoreOptions()
    common: dict[str, Any] = {
        "socket_timeout": options.socket_timeout_s,
        "socket_connect_timeout": options.connect_timeout_s,
        "socket_keepalive": True,
    }
    if url is None:
        import fakeredis  # noqa: PLC0415 - only the embedded store needs it

        client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
        return client, StoreInfo("embedded in-memory store (no Redis configured)", durable=False)
    if url.startswith("redis+cluster://"):
        cluster = _cluster_connections(RedisCluster.from_url(
            "redis://" + url.removeprefix("redis+cluster://"),
            retry=options.retry(options.cluster_retries, on_timeout=True), **common))
        return cluster, StoreInfo(f"Redis Cluster at {redact(url)}", durable=True)
    common |= {"max_connections": POOL_CONNECTIONS, "retry": options.retry(options.retries)}
    if url.startswith("redis://"):
        pool = LanePool.from_url(url, connection_class=QuickConnection, **common)
        address = LaneAddress.of(pool.connection_kwargs)
        if address is not None:
            pool.lane = CommandLane(address, options.retries, options.backoff())
        single = aioredis.Redis.from_pool(pool)
    else:
        single = aioredis.Redis.from_url(url, **common)
    return single, StoreInfo(f"Redis at {redact(url)}", durable=True)


def redact(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.rpartition("@")[2]
    return scheme + sep + rest


class LanePool(aioredis.ConnectionPool):
    """redis-py's pool with a `CommandLane` beside it (service/store/lane.py) when its settings
    allow one, closed with it (the client's `aclose`)."""

    lane: CommandLane | None = None

    async def disconnect(self, inuse_connections: bool = True) -> None:
        if self.lane is not None:
            await self.lane.aclose()
        await super().disconnect(inuse_connections)


def command_lane(client: Any) -> CommandLane | None:
    """The lane of a client `connect` made for a `redis://` URL; None for the others (the
    embedded store, a cluster, TLS, a Unix socket), whose commands take the client's own path."""
    pool = getattr(client, "connection_pool", None)
    return pool.lane if isinstance(pool, LanePool) else None

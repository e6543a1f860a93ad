"""The store client on a real redis-server: a command the socket takes at once is written without
waiting, one that cannot be is written through redis-py's own path, and both read their answers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from service.store.client import QuickConnection, connect


@pytest.fixture
async def client(redis_server: str) -> Any:
    store, _ = connect(redis_server)
    await store.flushall()
    yield store
    await store.aclose()


async def test_redis_urls_get_the_quick_connection(client: Any) -> None:
    assert client.connection_pool.connection_class is QuickConnection


async def test_small_commands_are_written_without_redis_pys_wait(client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    waited: list[object] = []
    wait_for = asyncio.wait_for

    async def counted(awaitable: Any, timeout: float | None) -> Any:
        waited.append(awaitable)
        return await wait_for(awaitable, timeout)

    await client.ping()  # connected before counting
    monkeypatch.setattr(asyncio, "wait_for", counted)
    await asyncio.gather(*(client.set(f"k{n}", "v") for n in range(50)))
    assert [await client.get(f"k{n}") for n in range(50)] == [b"v"] * 50
    assert waited == []


async def test_a_write_the_socket_cannot_take_at_once_still_arrives_whole(client: Any) -> None:
    """Megabytes that fill the socket's buffer: the queued rest is sent before the next command."""
    large = b"x" * (8 << 20)
    await asyncio.gather(client.set("large", large), *(client.set(f"k{n}", n) for n in range(20)))
    assert await client.strlen("large") == len(large)
    assert await client.get("large") == large
    assert [int(await client.get(f"k{n}")) for n in range(20)] == list(range(20))

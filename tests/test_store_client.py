"""The store client on a real redis-server: a command the socket takes at once is written without
waiting, one that cannot be is written through redis-py's own path, and both read their answers;
a step's commands take the lane, which answers as the client would, through broken connections,
cancelled requests and more commands at once than it keeps connections."""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
import pytest
from redis.asyncio.connection import Connection

from service.store.client import CommandLane, QuickConnection, command_lane, connect


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


# Answers "late" after keeping the server busy for `ARGV[1]` ms.
BUSY_THEN_LATE = """
local t = redis.call('TIME')
local until_us = (t[1] * 1000000 + t[2]) + ARGV[1] * 1000
repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] >= until_us
return 'late'
"""


def lane_of(client: Any) -> CommandLane:
    lane = command_lane(client)
    assert lane is not None
    return lane


async def test_only_a_redis_url_gets_a_lane(client: Any) -> None:
    embedded, _ = connect(None)
    assert command_lane(embedded) is None
    assert isinstance(command_lane(client), CommandLane)
    await embedded.aclose()


async def test_the_lane_answers_as_the_client_does(client: Any) -> None:
    lane = lane_of(client)
    await client.hset("h", mapping={"state": "code_sent", "version": "3"})
    assert await lane.hgetall("h") == await client.hgetall("h") == {b"state": b"code_sent", b"version": b"3"}
    assert await lane.hgetall("missing") == {}
    nested = "return {'version', '3', {'a', 'b'}}"
    assert await lane.execute("EVAL", nested, 0) == await client.eval(nested, 0) == [b"version", b"3", [b"a", b"b"]]
    assert lane.opened == 1  # one at a time: one connection, reused


async def test_on_resp2_the_lane_reads_a_hash_from_its_pairs(redis_server: str) -> None:
    client, _ = connect(redis_server + "?protocol=2")
    try:
        await client.hset("h2", mapping={"state": "code_sent", "version": "3"})
        assert await lane_of(client).hgetall("h2") == {b"state": b"code_sent", b"version": b"3"}
        assert await lane_of(client).hgetall("missing") == {}
    finally:
        await client.delete("h2")
        await client.aclose()


async def test_a_connection_the_server_closed_is_retried_on_a_fresh_one(client: Any) -> None:
    lane = lane_of(client)
    await client.set("k", "v")
    assert await lane.execute("GET", "k") == b"v"
    killed = await client.client_kill_filter(_type="normal", skipme=True)
    assert killed >= 1  # the lane's connection among them
    assert await lane.execute("GET", "k") == b"v"
    assert lane.opened == 1


async def test_a_cancelled_command_leaves_no_late_reply_for_the_next(client: Any) -> None:
    lane = lane_of(client)
    await client.set("k", "v")
    busy = asyncio.ensure_future(lane.execute("EVAL", BUSY_THEN_LATE, 0, 300))
    await asyncio.sleep(0.05)
    busy.cancel()
    with pytest.raises(asyncio.CancelledError):
        await busy
    assert await lane.execute("GET", "k") == b"v"  # not the cancelled script's "late"
    assert lane.opened == 1


async def test_past_its_limit_the_lane_borrows_the_pools_connections(client: Any) -> None:
    lane = CommandLane(client.connection_pool, limit=2)
    answers = await asyncio.gather(*(lane.execute("INCR", "n") for _ in range(10)))
    assert sorted(answers) == list(range(1, 11))
    assert lane.opened == 2
    await lane.aclose()


def test_the_lane_packs_the_bytes_redis_py_packs() -> None:
    """What a commit sends: text (Korean too), integers, bytes (an outbox entry), empty strings."""
    args = ("EVALSHA", "0" * 40, 3, "vf:{3}:v:0003", "vf:{3}:timers", "vf:{3}:outbox", 2, 3, 4_200_000,
            "last_code", "4013", "message", "인증번호가 일치하지 않습니다", 0, -1, b'{"kind":"sms"}', "")
    assert hiredis.pack_command(args) == b"".join(Connection().pack_command(*args))

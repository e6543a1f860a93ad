"""The store client on a real redis-server: a command the socket takes at once is written without
waiting, one that cannot be is written through redis-py's own path, and both read their answers;
a step's commands take the lane, which pipelines them on one connection and answers as the
client would, through broken connections, cancelled commands, timeouts and error replies."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import hiredis
import pytest
from redis import exceptions as redis_errors
from redis.asyncio.connection import Connection

from service.store.client import ClusterConnection, QuickConnection, StoreOptions, command_lane, connect
from service.store.lane import CommandLane


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
    assert lane.opened == 2


async def test_a_cancelled_command_leaves_no_late_reply_for_the_next(client: Any) -> None:
    lane = lane_of(client)
    await client.set("k", "v")
    busy = asyncio.ensure_future(lane.execute("EVAL", BUSY_THEN_LATE, 0, 300))
    await asyncio.sleep(0.05)
    busy.cancel()
    with pytest.raises(asyncio.CancelledError):
        await busy
    assert await lane.execute("GET", "k") == b"v"  # not the cancelled script's "late"
    assert lane.opened == 1  # the connection stays: the late reply is read and dropped


async def test_concurrent_commands_share_one_connection_and_get_their_own_replies(client: Any) -> None:
    lane = lane_of(client)
    await client.mset({f"k{n}": f"v{n}" for n in range(100)})
    gets = [lane.execute("GET", f"k{n}") for n in range(100)]
    incrs = [lane.execute("INCR", "n") for _ in range(100)]
    answers = await asyncio.gather(*(step for pair in zip(gets, incrs, strict=True) for step in pair))
    assert answers[0::2] == [f"v{n}".encode() for n in range(100)]
    assert sorted(answers[1::2]) == list(range(1, 101))
    assert lane.opened == 1


async def test_cancelled_commands_among_others_leave_the_others_their_replies(client: Any) -> None:
    lane = lane_of(client)
    await client.mset({f"k{n}": f"v{n}" for n in range(30)})
    steps = [asyncio.ensure_future(lane.execute("GET", f"k{n}")) for n in range(30)]
    await asyncio.sleep(0)  # every command written, none answered yet
    for step in steps[1::2]:
        step.cancel()
    answers = await asyncio.gather(*steps, return_exceptions=True)
    assert answers[0::2] == [f"v{n}".encode() for n in range(0, 30, 2)]
    assert all(isinstance(answer, asyncio.CancelledError) for answer in answers[1::2])
    assert await lane.execute("GET", "k29") == b"v29"
    assert lane.opened == 1


async def test_an_unanswered_command_times_out_and_closes_its_connection(redis_server: str) -> None:
    client, _ = connect(redis_server, StoreOptions(socket_timeout_s=0.3))
    lane = lane_of(client)
    try:
        await client.set("k", "v")
        started = time.monotonic()
        busy = lane.execute("EVAL", BUSY_THEN_LATE, 0, 1200)
        behind = lane.execute("GET", "k")  # waits behind the script on the same connection
        answers = await asyncio.gather(busy, behind, return_exceptions=True)
        took = time.monotonic() - started
        assert all(isinstance(answer, redis_errors.TimeoutError) for answer in answers), answers
        assert 0.3 <= took < 1.0, took  # the socket timeout and at most a quarter of it more
        await asyncio.sleep(1.2)  # the script is done
        assert await lane.execute("GET", "k") == b"v"
        assert lane.opened == 2
    finally:
        await client.aclose()


async def test_error_replies_raise_and_the_connection_goes_on(client: Any) -> None:
    lane = lane_of(client)
    await client.set("k", "v")
    with pytest.raises(redis_errors.NoScriptError):
        await lane.execute("EVALSHA", "0" * 40, 0)
    with pytest.raises(redis_errors.ResponseError, match="WRONGTYPE"):
        await lane.execute("HGETALL", "k")
    assert await lane.execute("GET", "k") == b"v"
    assert lane.opened == 1


async def test_the_lane_logs_in_and_selects_the_urls_database(client: Any, redis_server: str) -> None:
    await client.execute_command("ACL", "SETUSER", "lane", "on", ">lane-secret", "~*", "+@all")
    host_port = redis_server.removeprefix("redis://").split("/")[0]
    good, _ = connect(f"redis://lane:lane-secret@{host_port}/5")
    wrong, _ = connect(f"redis://lane:not-it@{host_port}/5")
    try:
        await lane_of(good).execute("SET", "in-five", "yes")
        assert await good.get("in-five") == b"yes"
        assert await client.get("in-five") is None  # database 0
        assert (await lane_of(good).execute("CLIENT", "INFO")).split(b" db=")[1].startswith(b"5 ")
        with pytest.raises(redis_errors.AuthenticationError):
            await lane_of(wrong).execute("GET", "in-five")
    finally:
        await good.flushdb()
        await good.aclose()
        await wrong.aclose()
        await client.execute_command("ACL", "DELUSER", "lane")


async def test_a_store_that_is_not_there_is_a_connection_error() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    client, _ = connect(f"redis://127.0.0.1:{port}/0")
    try:
        with pytest.raises(redis_errors.ConnectionError):
            await lane_of(client).execute("GET", "k")
    finally:
        await client.aclose()


async def test_closing_the_client_closes_the_lane(redis_server: str) -> None:
    client, _ = connect(redis_server)
    lane = lane_of(client)
    lane_id = await lane.execute("CLIENT", "ID")
    await client.aclose()
    observer, _ = connect(redis_server)
    try:
        listed = await observer.client_list()
        assert all(int(entry["id"]) != lane_id for entry in listed)
    finally:
        await observer.aclose()


async def test_a_cluster_connection_closed_under_a_command_fails_it_as_a_connection_error(redis_server: str) -> None:
    """What redis-py's cluster client does in a failover, staged: it closes a node's connection
    (nowait) while a command on it is about to be written; plain redis-py then raises
    AttributeError ('NoneType' has no attribute 'writelines'), which the API answered 500."""
    host, port = redis_server.removeprefix("redis://").split("/")[0].split(":")
    conn = ClusterConnection(host=host, port=int(port), socket_timeout=1)
    await conn.connect()
    sending = asyncio.ensure_future(conn.send_packed_command(conn.pack_command("PING"), check_health=False))
    await asyncio.sleep(0)  # the write is scheduled, not yet made
    await conn.disconnect(nowait=True)
    with pytest.raises(redis_errors.ConnectionError, match="closed while a command was written"):
        await sending
    await conn.connect()  # and the connection is usable again
    await conn.send_packed_command(conn.pack_command("PING"))
    assert await conn.read_response() in {b"PONG", "PONG"}
    await conn.disconnect()


def test_a_cluster_client_opens_cluster_connections() -> None:
    cluster, _ = connect("redis+cluster://127.0.0.1:7000")  # nothing is opened yet
    assert cluster.connection_kwargs["connection_class"] is ClusterConnection
    assert all(node.connection_class is ClusterConnection for node in cluster.nodes_manager.startup_nodes.values())


def test_the_lane_packs_the_bytes_redis_py_packs() -> None:
    """What a commit sends: text (Korean too), integers, bytes (an outbox entry), empty strings."""
    args = ("EVALSHA", "0" * 40, 3, "vf:{3}:v:0003", "vf:{3}:timers", "vf:{3}:outbox", 2, 3, 4_200_000,
            "last_code", "4013", "message", "인증번호가 일치하지 않습니다", 0, -1, b'{"kind":"sms"}', "")
    assert hiredis.pack_command(args) == b"".join(Connection().pack_command(*args))
